# shellcheck shell=bash
# Sourced by the other scripts: where the build looks for RocksDB and where it
# puts its output (outside the clone, so CI runs and clones share one build).
export ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/zkfs-target}"
ZKD_BIN="${ZKD_BIN:-$CARGO_TARGET_DIR/release/zkd}"
export ZKD_BIN
