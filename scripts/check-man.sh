#!/usr/bin/env bash
# Lints every man page in man/ with groff and mandoc (no warnings allowed), checks that
# every zkd command, option and zoo.cfg key and every zkfs option the code
# accepts is documented.
#
# Usage: scripts/check-man.sh [--help]
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

cd "$(dirname "$0")/.."
status=0
for page in man/*.[0-9]; do
  out=$(groff -t -man -ww -z "$page" 2>&1) || true
  out+=$(mandoc -T lint -W warning "$page" 2>&1) || true
  if [[ -n "$out" ]]; then
    echo "man page warnings in $page:" >&2
    echo "$out" >&2
    status=1
  fi
done

# Every key the config parser knows must appear in zoo.cfg(5).
keys=$(grep -oE '^ +"[A-Za-z0-9.]+",$' zkd/server/src/config.rs | tr -d ' ",' | sort -u)
for k in $keys; do
  if ! grep -qF -- "$k" man/zoo.cfg.5; then
    echo "zoo.cfg key '$k' is not documented in man/zoo.cfg.5" >&2
    status=1
  fi
done
# Every zkd subcommand and flag in --help must appear in zkd(8).
for word in serve status import export --help --version RUST_LOG; do
  escaped=${word//-/\\-}
  if ! grep -qF -- "$word" man/zkd.8 && ! grep -qF -- "$escaped" man/zkd.8; then
    echo "'$word' is not documented in man/zkd.8" >&2
    status=1
  fi
done
# Every zkbench option in its source must appear in zkbench(1).
for flag in $(grep -oE '"--[a-z]+"' zkd/bench/src/main.rs | tr -d '"' | sort -u); do
  escaped=${flag//-/\\-}
  if ! grep -qF -- "$escaped" man/zkbench.1; then
    echo "zkbench option '$flag' is not documented in man/zkbench.1" >&2
    status=1
  fi
done
# Every zkfs -o option and subcommand must appear in zkfs(8).
for opt in $(grep -oE '^ +"[a-z_]+"( \| "[a-z_]+")* =>' zkfs/src/options.rs | grep -oE '"[a-z_]+"' | tr -d '"' | sort -u) wait create; do
  escaped=${opt//_/\\_}
  if ! grep -qE -- "\b($opt|$escaped)\b" man/zkfs.8; then
    echo "zkfs option '$opt' is not documented in man/zkfs.8" >&2
    status=1
  fi
done
# Every zkfs shell recipe must be in zkfs-recipes(7).
for recipe in scripts/zk-*.sh; do
  name=$(basename "$recipe")
  if ! grep -qF -- "${name//-/\\-}" man/zkfs-recipes.7; then
    echo "recipe '$name' is not documented in man/zkfs-recipes.7" >&2
    status=1
  fi
done
if ((status == 0)); then echo "man pages: ok"; fi
exit $status
