#!/usr/bin/env bash
# Runs the cargo-fuzz targets in zkd/fuzz (client records, request
# preparation including multi, zoo.cfg parsing, quorum messages fed to a ZAB
# peer, forwarded requests and proposals fed to leader and learner servers)
# for a while each, with nightly Rust and libFuzzer. Installs
# cargo-fuzz if missing. Corpora stay in zkd/fuzz/corpus (not in git); a
# crash leaves its input in zkd/fuzz/artifacts and the script exits 1.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   (default 120, all)
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/../zkd/fuzz"
secs="${1:-120}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(records requests zoo_cfg quorum replica)
fi
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/cache/zkfs-fuzz-target}"
cargo +nightly fuzz build -O --fuzz-dir .
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
mkdir -p artifacts
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t for ${secs}s" >&2
  if ! "$bin/$t" "corpus/$t" -max_total_time="$secs" -artifact_prefix="artifacts/$t-" \
      -print_final_stats=1 2>&1 | grep -E "^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)"; then
    status=1
  fi
  if compgen -G "artifacts/$t-*" >/dev/null; then
    echo "$t: crash inputs in zkd/fuzz/artifacts" >&2
    status=1
  fi
done
exit $status
