#!/usr/bin/env bash
# Config reload on a zkfs mount: runs COMMAND once now and again after every
# change of FILE made by anyone, anywhere (zkfs turns ZooKeeper watches into
# inotify events; `zkfs wait` blocks on them). COMMAND gets the file's current
# content on its standard input.
#
# Usage: scripts/zk-config-watch.sh MOUNT/FILE COMMAND [ARG...]
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" || $# -lt 2 ]]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -lt 2 && "${1:-}" != "--help" && "${1:-}" != "-h" ]] && exit 64
  exit 0
fi
file="$1"
shift
zkfs="${ZKFS:-zkfs}"
last=""
while :; do
  # The znode's mzxid names the version: a change made while COMMAND ran or
  # before the wait began is caught here, not lost.
  now="$(getfattr --only-values -n user.zk.mzxid "$file" 2>/dev/null || echo absent)"
  if [[ "$now" != "$last" ]]; then
    last="$now"
    if [[ -e "$file" ]]; then
      "$@" < "$file"
    fi
    continue
  fi
  "$zkfs" wait -t 2 "$file" >/dev/null || true
done
