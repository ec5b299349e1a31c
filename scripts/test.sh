#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the Rust unit and
# codec tests, the man page lint, then the end-to-end suite (real zkd, real
# Apache ZooKeeper, kazoo, zkCli.sh, cli_mt) under pytest.
#
# Usage: scripts/test.sh [--help] [pytest arguments...]
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
cargo test --release --locked --workspace
scripts/check-man.sh
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e "$@"
