#!/usr/bin/env bash
# Installs what is missing, builds, runs a standalone zkd on 127.0.0.1:2181
# with its data in ./zkfs-data (created on first run, with a zoo.cfg you can
# edit), and mounts its tree with zkfs at ./zkfs-mnt. Ctrl-C unmounts and
# stops both.
#
# Usage: scripts/run.sh [--help]
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

cd "$(dirname "$0")/.."
scripts/install-deps.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked

data="$PWD/zkfs-data"
mkdir -p "$data"
if [[ ! -f "$data/zoo.cfg" ]]; then
  cat > "$data/zoo.cfg" <<CFG
tickTime=2000
dataDir=$data/zkd
clientPort=2181
clientPortAddress=127.0.0.1
4lw.commands.whitelist=srvr,ruok,mntr,stat,conf,isro
CFG
fi
mnt="$PWD/zkfs-mnt"
mkdir -p "$mnt"
zkfs_bin="$(dirname "$ZKD_BIN")/zkfs"

"$ZKD_BIN" serve "$data/zoo.cfg" &
zkd_pid=$!
cleanup() {
  fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  kill "$zkd_pid" 2>/dev/null || true
  wait "$zkd_pid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
for _ in $(seq 100); do
  "$ZKD_BIN" status 127.0.0.1:2181 >/dev/null 2>&1 && break
  sleep 0.1
done
"$zkfs_bin" 127.0.0.1:2181 "$mnt"
echo "zkd on 127.0.0.1:2181 (config $data/zoo.cfg), its tree mounted at $mnt" >&2
echo "try: echo hello > $mnt/greeting; ls -l $mnt; man -l man/zkfs.8" >&2
wait "$zkd_pid"
