#!/usr/bin/env bash
# Leader election on a zkfs mount: every candidate queues an
# ephemeral-sequential file in DIR that lives as long as this process; the
# lowest sequence is the leader and runs COMMAND. Each follower waits for the
# deletion of the candidate just before it (no herd on a change).
#
# Usage: scripts/zk-elect.sh MOUNT/DIR ID COMMAND [ARG...]
# ID is written into the candidate file so others can see who leads:
#   cat "$(ls -d MOUNT/DIR/n_* | head -1)"
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" || $# -lt 3 ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -lt 3 && "${1:-}" != "--help" && "${1:-}" != "-h" ]] && exit 64
  exit 0
fi
dir="$1"
id="$2"
shift 2
zkfs="${ZKFS:-zkfs}"
mkdir -p "$dir"
# @handle: the znode exists while descriptor 3 is open (here and in COMMAND).
exec 3>"$dir/n_@handle,sequential"
printf '%s\n' "$id" >&3
me="$(getfattr --only-values -n user.zk.name "/proc/$$/fd/3")"
while :; do
  pred=""
  for c in "$dir"/n_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
    [[ -e "$c" ]] || continue
    c="${c##*/}"
    [[ "$c" == "$me" ]] && break
    pred="$c"
  done
  if [[ -z "$pred" ]]; then
    exec "$@"
  fi
  # Returns when the predecessor goes; the timeout only bounds a missed event.
  "$zkfs" wait -t 30 "$dir/$pred" >/dev/null || true
done
