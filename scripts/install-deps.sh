#!/usr/bin/env bash
# Installs the Debian 12 packages zkfs needs to build and test, if missing.
#
# Usage: scripts/install-deps.sh [--help]
#
# Build: librocksdb-dev (zkd links Debian's RocksDB 7.8), libclang-dev and
# clang (bindgen for the RocksDB bindings), pkg-config.
# Tests: mandoc (man page lint); zookeeper (Apache ZooKeeper 3.8.0, the reference server),
# zookeeper-bin (the C client cli_mt), python3-kazoo and python3-pytest (the
# Python client and test runner), groff-base (man page checks), shellcheck
# (script checks); fuse3, inotify-tools, attr, rsync (zkfs mounts and the
# shell tools its tests drive).
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

packages=(
  librocksdb-dev libclang-dev clang pkg-config
  zookeeper zookeeper-bin python3-kazoo python3-pytest groff-base shellcheck
  fuse3 inotify-tools attr rsync util-linux mandoc iptables
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (rustup, Rust 1.80 or newer)" >&2
  exit 1
fi
