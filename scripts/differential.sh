#!/usr/bin/env bash
# A longer differential search than CI runs: the same seeded random operations
# against zkd and Apache ZooKeeper 3.8.0, compared reply by reply, event by
# event and tree by tree. A failing seed prints itself and how to replay it.
#
# Usage: scripts/differential.sh [--help] [SEEDS [STEPS]]   (default 500 seeds of 300 steps)
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked
DIFF_SEEDS="${1:-500}" DIFF_STEPS="${2:-300}" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e/test_differential.py
