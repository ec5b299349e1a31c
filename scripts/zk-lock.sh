#!/usr/bin/env bash
# Runs a command while holding a distributed lock: a flock on a file in a
# zkfs mount is the ZooKeeper lock recipe (fair, released when the command
# ends, dies, or its mount loses the session).
#
# Usage: scripts/zk-lock.sh [-n] MOUNT/DIR/NAME COMMAND [ARG...]
#   -n   fail at once (exit 1) instead of waiting when the lock is held
# The fencing token of the holder is in $ZK_LOCK_TOKEN for the command.
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" || $# -lt 2 ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -lt 2 && "${1:-}" != "--help" && "${1:-}" != "-h" ]] && exit 64
  exit 0
fi
nb=()
if [[ "$1" == "-n" ]]; then
  nb=(-n)
  shift
fi
lock="$1"
shift
mkdir -p "$(dirname "$lock")"
exec 9>>"$lock"
flock "${nb[@]}" 9 || exit 1
ZK_LOCK_TOKEN="$(getfattr --only-values -n user.zk.lock.token "$lock")"
export ZK_LOCK_TOKEN
# The command inherits descriptor 9: the lock lives exactly as long as it does.
exec "$@"
