#!/usr/bin/env bash
# Installs what is missing, builds, and runs a standalone zkd in the
# foreground on 127.0.0.1:2181 with its data in ./zkfs-data (created on first
# run, with a zoo.cfg you can edit). Ctrl-C stops it.
#
# Usage: scripts/run.sh [--help]
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
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
echo "zkd on 127.0.0.1:2181, config $data/zoo.cfg; try: $ZKD_BIN status" >&2
exec "$ZKD_BIN" serve "$data/zoo.cfg"
