#!/usr/bin/env bash
# Benchmarks zkd against Apache ZooKeeper 3.8.0 in the same run, on the same
# disk, both with fsync on and tickTime=2000, and prints ops/s, p50/p99/p99.9
# latency and the zkd/ZooKeeper ratio per workload. The load generator
# (zkbench) is pipelined; its own CPU share is printed so a reader can see it
# measured the servers, not itself.
#
# Usage: scripts/bench.sh [--help] [--quick] [--seconds S]
#   --quick      fewer workloads and shorter runs (a smoke test of the bench)
#   --seconds S  seconds per workload (default 5)
set -euo pipefail

seconds=5
quick=0
while (($#)); do
  case "$1" in
    --help|-h) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --quick) quick=1; seconds=2 ;;
    --seconds) seconds="$2"; shift ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
scripts/install-deps.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked -p zkd -p zkbench
bench="$CARGO_TARGET_DIR/release/zkbench"

work=$(mktemp -d /var/tmp/zkbench.XXXXXX)
zkd_pid=""; zk_pid=""
cleanup() {
  if [[ -n "$zkd_pid" ]]; then kill "$zkd_pid" 2>/dev/null || true; fi
  if [[ -n "$zk_pid" ]]; then kill -9 -- "-$zk_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
zkd_port=$(port); zk_port=$(port)
common="tickTime=2000
clientPortAddress=127.0.0.1
maxClientCnxns=0
4lw.commands.whitelist=*"
mkdir -p "$work/zkd" "$work/zk/data"
printf '%s\ndataDir=%s\nclientPort=%s\n' "$common" "$work/zkd/data" "$zkd_port" > "$work/zkd/zoo.cfg"
printf '%s\ndataDir=%s\nclientPort=%s\nadmin.enableServer=false\n' "$common" "$work/zk/data" "$zk_port" > "$work/zk/zoo.cfg"

RUST_LOG=warn "$ZKD_BIN" serve "$work/zkd/zoo.cfg" 2> "$work/zkd.log" &
zkd_pid=$!
ZOOCFGDIR="$work/zk" ZOO_LOG_DIR="$work/zk" setsid /usr/share/zookeeper/bin/zkServer.sh start-foreground \
  "$work/zk/zoo.cfg" > "$work/zk.log" 2>&1 &
zk_pid=$!

wait_up() {
  for _ in $(seq 1 300); do
    if [[ "$( (exec 3<>/dev/tcp/127.0.0.1/"$1" && printf srvr >&3 && cat <&3) 2>/dev/null)" == *Mode:* ]]; then
      return 0
    fi
    sleep 0.2
  done
  echo "bench.sh: server on port $1 did not come up" >&2; exit 1
}
wait_up "$zkd_port"; wait_up "$zk_port"

if ((quick)); then
  runs=("get 1 1 100" "set 1 1 100" "get 16 32 100" "set 16 32 100")
else
  runs=()
  for size in 100 10240; do
    for w in create set get exists children delete multi10 mix; do
      runs+=("$w 1 1 $size" "$w 16 32 $size")
    done
  done
  runs+=("children10k 1 1 100" "children10k 8 8 100")
fi

results="$work/results.jsonl"
n=0
for r in "${runs[@]}"; do
  read -r w conns depth size <<< "$r"
  n=$((n + 1))
  for side in zkd zk; do
    p=$zkd_port; [[ $side == zk ]] && p=$zk_port
    keys=1000; [[ $w == delete ]] && keys=$((2000 / conns + 1))
    line=$("$bench" --server "127.0.0.1:$p" --workload "$w" --conns "$conns" --depth "$depth" \
      --size "$size" --seconds "$seconds" --keys "$keys" --prefix "/b$n$side")
    echo "{\"server\":\"$side\",${line#\{}" >> "$results"
  done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
key = lambda r: (r["workload"], r["conns"], r["depth"], r["size"])
by = {}
for r in rows:
    by.setdefault(key(r), {})[r["server"]] = r
print(f"{'workload':<12}{'conns':>6}{'depth':>6}{'size':>7} | {'zkd ops/s':>10}{'ZK ops/s':>10}{'ratio':>7} |"
      f" {'zkd p50/p99/p99.9 us':>22} {'ZK p50/p99/p99.9 us':>22} | bench cpu%")
for k, v in by.items():
    a, b = v["zkd"], v["zk"]
    ratio = a["ops_per_s"] / b["ops_per_s"] if b["ops_per_s"] else float("inf")
    lat = lambda r: f"{r['p50_us']}/{r['p99_us']}/{r['p999_us']}"
    print(f"{k[0]:<12}{k[1]:>6}{k[2]:>6}{k[3]:>7} | {a['ops_per_s']:>10.0f}{b['ops_per_s']:>10.0f}{ratio:>7.2f} |"
          f" {lat(a):>22} {lat(b):>22} | {a['bench_cpu_pct']:.0f}/{b['bench_cpu_pct']:.0f}")
errs = [r for r in rows if r["errors"]]
if errs:
    print("runs with errors:", [(r["server"], r["workload"], r["errors"]) for r in errs])
PY
rss() { ps -o rss= -p "$1" | tr -d ' '; }
zk_java=$(pgrep -f "zk/zoo.cfg" -n || true)
echo "RSS after the run: zkd $(rss "$zkd_pid") KiB, ZooKeeper ${zk_java:+$(rss "$zk_java")} KiB"
