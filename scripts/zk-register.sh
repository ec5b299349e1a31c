#!/usr/bin/env bash
# Service registration on a zkfs mount: DIR/NAME holds DATA exactly as long
# as COMMAND runs (a handle-scoped ephemeral), so a dead service disappears
# from the registry at once, and a dead machine after its session timeout.
#
# Usage: scripts/zk-register.sh MOUNT/DIR NAME DATA COMMAND [ARG...]
# Readers list the live instances with: ls MOUNT/DIR; cat MOUNT/DIR/*
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" || $# -lt 4 ]]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -lt 4 && "${1:-}" != "--help" && "${1:-}" != "-h" ]] && exit 64
  exit 0
fi
dir="$1"
name="$2"
data="$3"
shift 3
mkdir -p "$dir"
exec 3>"$dir/$name@handle"
printf '%s\n' "$data" >&3
exec "$@"
