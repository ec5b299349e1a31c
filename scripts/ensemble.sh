#!/usr/bin/env bash
# Starts, stops and inspects a local zkd ensemble on loopback: N members
# (default 3) in DIR (default ./zkd-ensemble), member i on 127.0.0.1 with
# client port BASE+i-1, quorum port BASE+100+i, election port BASE+200+i
# (BASE default 22181). Each member has DIR/n<i>/zoo.cfg, data/ and zkd.log.
#
# Usage: scripts/ensemble.sh [-n N] [-d DIR] [-p BASE] start [ID]
#        scripts/ensemble.sh [-d DIR] stop [ID]      (SIGTERM; all if no ID)
#        scripts/ensemble.sh [-d DIR] kill ID        (kill -9, for failover tests)
#        scripts/ensemble.sh [-d DIR] status         (mode, zxid, digest per member)
#        scripts/ensemble.sh [-d DIR] hosts          (the client connect string)
#        scripts/ensemble.sh --help
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

n=3
dir="$PWD/zkd-ensemble"
base=22181
while getopts ":n:d:p:h-:" opt; do
  case "$opt" in
    n) n=$OPTARG ;;
    d) dir=$OPTARG ;;
    p) base=$OPTARG ;;
    h) usage; exit 0 ;;
    -) if [[ "$OPTARG" == help ]]; then usage; exit 0; fi
       echo "ensemble.sh: unknown option --$OPTARG" >&2; exit 64 ;;
    *) echo "ensemble.sh: bad option; see --help" >&2; exit 64 ;;
  esac
done
shift $((OPTIND - 1))
cmd=${1:-}
id=${2:-}
if [[ -z "$cmd" ]]; then usage >&2; exit 64; fi
if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > 9)); then
  echo "ensemble.sh: -n must be 1..9" >&2; exit 64
fi

here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$here/scripts/env.sh"
zkd="${ZKD:-$ZKD_BIN}"

members() {
  if [[ -n "$id" ]]; then echo "$id"; return; fi
  if [[ -d "$dir" ]]; then
    find "$dir" -maxdepth 1 -name 'n[0-9]' -printf '%f\n' | sed 's/^n//' | sort -n
  fi
}

client_port() { grep -E '^clientPort=' "$dir/n$1/zoo.cfg" | cut -d= -f2; }

write_cfg() {
  local i=$1 j
  mkdir -p "$dir/n$i/data"
  echo "$i" > "$dir/n$i/data/myid"
  {
    echo "tickTime=200"
    echo "initLimit=10"
    echo "syncLimit=5"
    echo "dataDir=$dir/n$i/data"
    echo "clientPort=$((base + i - 1))"
    echo "clientPortAddress=127.0.0.1"
    echo "maxSessionTimeout=30000"
    echo "4lw.commands.whitelist=*"
    for ((j = 1; j <= n; j++)); do
      echo "server.$j=127.0.0.1:$((base + 100 + j)):$((base + 200 + j))"
    done
  } > "$dir/n$i/zoo.cfg"
}

alive() { [[ -f "$dir/n$1/pid" ]] && kill -0 "$(cat "$dir/n$1/pid")" 2>/dev/null; }

start_one() {
  local i=$1
  [[ -f "$dir/n$i/zoo.cfg" ]] || write_cfg "$i"
  if alive "$i"; then echo "server.$i already running (pid $(cat "$dir/n$i/pid"))"; return; fi
  "$zkd" serve "$dir/n$i/zoo.cfg" >> "$dir/n$i/zkd.log" 2>&1 &
  echo $! > "$dir/n$i/pid"
  echo "server.$i started (pid $!, client port $(client_port "$i"), log $dir/n$i/zkd.log)"
}

wait_serving() {
  local i deadline=$((SECONDS + 30))
  for i in "$@"; do
    until "$zkd" status "127.0.0.1:$(client_port "$i")" 2>/dev/null | grep -qE 'Mode: (leader|follower|observer)'; do
      if ((SECONDS > deadline)); then echo "server.$i is not serving after 30 s; see $dir/n$i/zkd.log" >&2; return 1; fi
      sleep 0.1
    done
  done
}

case "$cmd" in
  start)
    if [[ ! -x "$zkd" ]]; then echo "ensemble.sh: no zkd at $zkd (cargo build --release first)" >&2; exit 69; fi
    if [[ -z "$id" ]]; then
      for ((i = 1; i <= n; i++)); do [[ -f "$dir/n$i/zoo.cfg" ]] || write_cfg "$i"; done
    fi
    mapfile -t ids < <(if [[ -n "$id" ]]; then echo "$id"; else seq 1 "$n"; fi)
    for i in "${ids[@]}"; do start_one "$i"; done
    wait_serving "${ids[@]}"
    "$0" -d "$dir" status
    ;;
  stop | kill)
    if [[ "$cmd" == kill && -z "$id" ]]; then echo "ensemble.sh: kill needs a member id" >&2; exit 64; fi
    sig=TERM; [[ "$cmd" == kill ]] && sig=KILL
    for i in $(members); do
      if alive "$i"; then
        pid=$(cat "$dir/n$i/pid")
        kill -s "$sig" "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "server.$i stopped ($sig)"
      fi
      rm -f "$dir/n$i/pid"
    done
    ;;
  status)
    for i in $(members); do
      port=$(client_port "$i")
      if ! alive "$i"; then printf 'server.%s  127.0.0.1:%s  down\n' "$i" "$port"; continue; fi
      mntr=$("$zkd" status "127.0.0.1:$port" 2>/dev/null | grep -E '^Mode:' || echo "Mode: unreachable")
      digest=""
      if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
        printf mntr >&3
        digest=$(grep -E 'zk_tree_digest' <&3 | tr '\n\t' '  ')
        exec 3<&-
      fi
      printf 'server.%s  127.0.0.1:%s  %s  %s\n' "$i" "$port" "$mntr" "$digest"
    done
    ;;
  hosts)
    hosts=""
    for i in $(members); do hosts+="${hosts:+,}127.0.0.1:$(client_port "$i")"; done
    echo "$hosts"
    ;;
  *)
    echo "ensemble.sh: unknown command '$cmd'; see --help" >&2
    exit 64
    ;;
esac
