#!/usr/bin/env bash
# Long seeded simulation of ZAB ensembles (3, 5 and 7 voters, with and
# without an observer) under message loss, duplication, delay, partitions,
# crashes mid-step and whole-ensemble power failures, checking zab.md's
# invariants after every step. CI runs about 500 seeds; this runs as many as
# you ask. A failing seed is printed and replays exactly with the same seed.
#
# Usage: scripts/zab-soak.sh [SEEDS [FIRST_SEED]] [--broken]
#   --broken  run a deliberately broken follower (ACK before fsync) to see
#             the simulation catch lost writes (about 1 seed in 100)
# Fault rates from the environment: ZAB_CRASH, ZAB_CRASH_MID, ZAB_POWER
# (per step) and ZAB_FSYNC (max fsync ms); e.g. the heavy set
# ZAB_CRASH=0.01 ZAB_CRASH_MID=0.01 ZAB_POWER=0.005.
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
args=()
for a in "$@"; do
  if [[ "$a" == "--broken" ]]; then
    export ZAB_BROKEN=1 ZAB_POWER=0.005 ZAB_FSYNC=50
  else
    args+=("$a")
  fi
done
cargo build --release --locked -q -p zkd-zab --bin zab-soak
exec "$CARGO_TARGET_DIR/release/zab-soak" "${args[@]}"
