#!/usr/bin/env bash
# Benchmarks zkd against Apache ZooKeeper 3.8.0 in the same run, on the same
# disk, both with fsync on and tickTime=2000, and prints ops/s, p50/p99/p99.9
# latency, the zkd/ZooKeeper ratio, and for each server the KiB the disk
# wrote per op (setup and background work included) and the CPU time its
# processes used per op during the run, per workload. The load generator
# (zkbench) is pipelined; its own CPU share is printed so a reader can see it
# measured the servers, not itself.
#
# Usage: scripts/bench.sh [--help] [--quick] [--seconds S] [--ensemble] [--member-delay US]
#                         [--repeat N] [--run R]... [--fill F] [--together] [--busy N]
#                         [--warmup S] [--keep-znodes]
#   --quick      fewer workloads and shorter runs (a smoke test of the bench)
#   --seconds S  seconds per workload (default 5)
#   --ensemble   three members of each on loopback instead of one server;
#                the load generator spreads its connections over them
#   --member-delay US  with --ensemble: the members' quorum links (not the
#                clients') pass through scripts/delay-proxy.py, which delays
#                each way by US microseconds, as if the members ran on
#                separate machines; for runs with few requests in flight
#   --repeat N   N passes over the runs, the servers taking turns to go first;
#                the table shows each server's median and the range of the
#                per-pass ratios (default 1)
#   --run R      only this run, R = "WORKLOAD CONNS DEPTH SIZE" (repeatable)
#   --fill F     the data: random (default; does not compress) or x (one
#                byte repeated, which zkd's compressed storage keeps for
#                next to nothing; tables made before this option used x)
#   --together   keep both servers' members up for the whole pass, the
#                rows alternating between them (tables made before this
#                option); by default each server is up only for its own
#                runs: every row against one, then every row against the
#                other
#   --busy N     N busy loops (nice 0, loop i pinned to CPU i mod CPUs)
#                run beside the server during each run, setup included,
#                and stop before the machine is let settle: both servers
#                measured on CPUs that others want too
#   --warmup S   before each timed run, S seconds of the same workload
#                (100 keys per connection, its own prefix, not counted),
#                then the machine is let settle, so no row times a
#                server's first run of its workload (default 2; 0 for
#                none, as tables made before this option). Cold, ZooKeeper
#                ran multi10 1x1 10 KiB at 640-647 ops/s, warm at 1109
#   --keep-znodes  leave each run's znodes (its warm-up's too) in the tree
#                for the rows after it (tables made before this option).
#                By default they are deleted once the run is measured
#                (zkbench --workload clear, not timed), so every row starts
#                on the same tree on both servers: kept, the faster server
#                carried more znodes into the later rows (a zkd ensemble's
#                multi10 16x32 100 B: 16.4k ops/s fresh, 12.9k after two
#                create 16x32 runs)
# Each run's znodes are created by a zkbench of their own (--setup only),
# and the machine is let settle again before the timed run (--setup skip).
# Environment: KEEP=1 keeps the servers' data and logs; ZKD_BIN=PATH
# benchmarks that zkd binary instead of the one just built (before/after);
# SETTLE=0 starts each run at once instead of on a quiet machine;
# ZKBENCH_BIN=PATH drives the runs with that load generator (a test wraps
# zkbench with it).
set -euo pipefail

seconds=5
fill=random
repeat=1
quick=0
members=1
member_delay=0
together=0
busy=0
warmup=2
keep_znodes=0
only=()
while (($#)); do
  case "$1" in
    --help|-h) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    --ensemble) members=3 ;;
    --together) together=1 ;;
    --keep-znodes) keep_znodes=1 ;;
    --member-delay)
      member_delay="$2"; shift
      [[ "$member_delay" =~ ^[0-9]+$ ]] || { echo "bench.sh: --member-delay takes microseconds" >&2; exit 2; }
      ;;
    --quick) quick=1; seconds=2 ;;
    --seconds) seconds="$2"; shift ;;
    --run) only+=("$2"); shift ;;
    --fill)
      fill="$2"; shift
      [[ $fill == random || $fill == x ]] || { echo "bench.sh: --fill takes random or x" >&2; exit 2; }
      ;;
    --warmup)
      warmup="$2"; shift
      [[ "$warmup" =~ ^[0-9]+$ ]] || { echo "bench.sh: --warmup takes whole seconds" >&2; exit 2; }
      ;;
    --busy)
      busy="$2"; shift
      [[ "$busy" =~ ^[0-9]+$ ]] || { echo "bench.sh: --busy takes a count" >&2; exit 2; }
      ;;
    --repeat)
      repeat="$2"; shift
      [[ "$repeat" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --repeat takes a count of 1 or more" >&2; exit 2; }
      ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if ((member_delay > 0 && members == 1)); then
  echo "bench.sh: --member-delay needs --ensemble" >&2; exit 2
fi

cd "$(dirname "$0")/.."
scripts/install-deps.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --release --locked -p zkd -p zkbench
bench="${ZKBENCH_BIN:-$CARGO_TARGET_DIR/release/zkbench}"

work=$(mktemp -d /var/tmp/zkbench.XXXXXX)
pids=()
cleanup() {
  busy_stop
  for p in "${pids[@]}"; do kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
  if [[ -n "${KEEP:-}" ]]; then echo "bench.sh: data and logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

common="tickTime=2000
initLimit=10
syncLimit=5
clientPortAddress=127.0.0.1
maxClientCnxns=0
4lw.commands.whitelist=*"
declare -A cport
# Each pass runs against fresh servers in $work/p<pass>, like a run of its
# own: one pair through three passes held three passes' znodes, and
# ZooKeeper ran out of heap (connection refused) in the third.
# start_servers PASS SIDE...: starts the members of the sides named (zkd,
# zk), each side with its own ports, and says where they listen.
start_servers() {
  pdir="$work/p$1"
  local at=$1; shift
  local sides=("$@") side i j d q servers ports k=0 nproxy=0 said=""
  local -A qport eport proxy
  ((member_delay > 0)) && nproxy=$((members * (members - 1)))
  # Every port of the block at once, all distinct (scripts/ports.py says
  # why they are not taken from the kernel's ephemeral range).
  mapfile -t ports < <(python3 scripts/ports.py $((${#sides[@]} * (members * 3 + nproxy))))
  proxy_pids=()
  for side in "${sides[@]}"; do
    local specs=()
    for ((i = 1; i <= members; i++)); do
      cport[$side$i]=${ports[k++]}
      if ((members > 1)); then qport[$i]=${ports[k++]}; eport[$i]=${ports[k++]}; fi
    done
    # Member i reaches member j's quorum port through proxy[i,j]; its own
    # line keeps its real port, which it listens on.
    if ((nproxy)); then
      for ((i = 1; i <= members; i++)); do
        for ((j = 1; j <= members; j++)); do
          ((i == j)) && continue
          proxy[$i,$j]=${ports[k++]}
          specs+=("${proxy[$i,$j]}:${qport[$j]}")
        done
      done
      mkdir -p "$pdir"
      python3 scripts/delay-proxy.py "$member_delay" "${specs[@]}" 2> "$pdir/$side-proxy.log" &
      proxy_pids+=($!); disown
    fi
    for ((i = 1; i <= members; i++)); do
      servers=""
      for ((j = 1; j <= members && members > 1; j++)); do
        q=${qport[$j]}
        ((nproxy && i != j)) && q=${proxy[$i,$j]}
        servers+="server.$j=127.0.0.1:$q:${eport[$j]}"$'\n'
      done
      d="$pdir/$side$i"
      mkdir -p "$d/data"
      echo "$i" > "$d/data/myid"
      printf '%s\ndataDir=%s\nclientPort=%s\nadmin.enableServer=false\n%s' "$common" "$d/data" \
        "${cport[$side$i]}" "$servers" > "$d/zoo.cfg"
    done
  done
  # Each member is its own process group (setsid): what the runs' CPU time
  # is read from, and what is killed.
  zkd_groups=(); zk_groups=()
  for ((i = 1; i <= members; i++)); do
    for side in "${sides[@]}"; do
      if [[ $side == zkd ]]; then
        RUST_LOG=info setsid "$ZKD_BIN" serve "$pdir/zkd$i/zoo.cfg" 2> "$pdir/zkd$i.log" &
        zkd_groups+=($!); disown
      else
        ZOOCFGDIR="$pdir/zk$i" ZOO_LOG_DIR="$pdir/zk$i" setsid /usr/share/zookeeper/bin/zkServer.sh start-foreground \
          "$pdir/zk$i/zoo.cfg" > "$pdir/zk$i.log" 2>&1 &
        zk_groups+=($!); disown
      fi
    done
  done
  pass_pids=("${zkd_groups[@]}" "${zk_groups[@]}" "${proxy_pids[@]}")
  pids+=("${pass_pids[@]}")
  zkd_hosts=""; zk_hosts=""
  for side in "${sides[@]}"; do
    local hosts=""
    for ((i = 1; i <= members; i++)); do
      wait_up "${cport[$side$i]}"
      hosts+="${hosts:+,}127.0.0.1:${cport[$side$i]}"
    done
    if [[ $side == zkd ]]; then zkd_hosts=$hosts; said+="zkd $hosts   "; else zk_hosts=$hosts; said+="ZooKeeper $hosts   "; fi
  done
  local apart=""
  ((nproxy)) && apart=", member links delayed ${member_delay} µs each way"
  ((busy)) && apart+=", $busy busy loop(s) during each run"
  echo "pass $at: $said($members member(s) each, fsync on, tickTime 2000, data $fill$apart)"
}
# stop_servers SIDE...: stops what start_servers started and drops those
# sides' data and logs (unless KEEP).
stop_servers() {
  local p side
  for p in "${pass_pids[@]}"; do kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
  [[ -n "${KEEP:-}" ]] && return 0
  for side in "$@"; do rm -rf "$pdir/$side"[0-9]* "$pdir/$side-proxy.log"; done
}

wait_up() {
  for _ in $(seq 1 300); do
    # Bounded: a JVM still starting can accept the connection and not answer.
    # shellcheck disable=SC2016 # $1 expands in the inner shell
    if [[ "$(timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/"$1" && printf srvr >&3 && cat <&3' _ "$1" 2>/dev/null)" == *Mode:* ]]; then
      return 0
    fi
    sleep 0.2
  done
  echo "bench.sh: server on port $1 did not come up" >&2; exit 1
}

if ((${#only[@]})); then
  runs=("${only[@]}")
elif ((quick)); then
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

# The memory the kernel could hand out (MemAvailable) as a run starts; the
# table's footer says how low it got per side.
mem_available_mib() {
  local k v _
  while read -r k v _; do
    [[ $k == MemAvailable: ]] && { echo $((v / 1024)); return; }
  done < /proc/meminfo
  echo 0
}

# Each run starts on a quiet machine: the previous run's background work
# (ZooKeeper writing a snapshot, RocksDB flushing or compacting, zkd
# freeing deleted files, dirty pages of either) is waited out, at most
# 30 s, so it is not billed to whichever server runs next. Quiet: after a
# sync, for 0.5 s the disks wrote and discarded under 1 MiB, the CPUs were
# 90% idle and under 8 MiB of pages were dirty.
# SETTLE=0 turns this off.
# Whole physical disks only (those with a device behind them): partitions,
# device-mapper and md volumes would count the same writes again. Read and
# summed in bash, not awk: Debian's awk (mawk) prints numbers past 2^31 as
# 2.15979e+09, which bash arithmetic refuses.
# With +discarded, the sectors discarded too (the 14th field; kernels
# before 4.18 have none): on a file system mounted with discard, freeing a
# file is disk work, and zkd frees deleted files gradually (zkd(8),
# zkd.trash).
disk_sectors_written() {
  local s=0 d w x
  for d in /sys/block/*; do
    [[ -e $d/device ]] || continue
    read -r _ _ _ _ _ _ w _ _ _ _ _ _ x _ < "$d/stat"
    s=$((s + w))
    [[ ${1:-} == +discarded ]] && s=$((s + ${x:-0}))
  done
  echo "$s"
}
# printf "%.0f" for the same reason: mawk would print 2.15979e+09 (every
# run then waited the full 30 s).
cpu_busy_idle() { awk '/^cpu / {printf "%.0f %.0f\n", $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
settle_waits=0 settled_s=0
settle() {
  [[ "${SETTLE:-1}" == 0 ]] && return 0
  local start=$SECONDS w0 w1 b0 i0 b1 i1 dirty
  settle_waits=$((settle_waits + 1))
  while ((SECONDS - start < 30)); do
    # Dirty pages would otherwise wait up to 30 s for the kernel's writeback.
    sync
    w0=$(disk_sectors_written +discarded); read -r b0 i0 < <(cpu_busy_idle)
    sleep 0.5
    w1=$(disk_sectors_written +discarded); read -r b1 i1 < <(cpu_busy_idle)
    dirty=$(awk '/^(Dirty|Writeback):/ {s += $2} END {printf "%.0f\n", s}' /proc/meminfo)
    if ((w1 - w0 < 2048 && (b1 - b0) * 10 < (b1 - b0 + i1 - i0) && dirty < 8192)); then
      settled_s=$((settled_s + SECONDS - start))
      return 0
    fi
  done
  settled_s=$((settled_s + SECONDS - start))
  echo "bench.sh: the machine did not settle in 30 s before $1; running anyway" >&2
}

# --busy: each loop runs in its own process group, killed with it (by
# cleanup too, if the script stops meanwhile).
busy_pids=()
busy_start() {
  local i cpus
  cpus=$(nproc)
  for ((i = 0; i < busy; i++)); do
    # Pinned, loop i on CPU i mod cpus: left to the scheduler, two loops
    # sometimes shared one CPU of two for a whole run and left the other
    # free (1x1 setData on zkd: 309 ops/s in one run, 4188 in the next).
    setsid taskset -c $((i % cpus)) bash -c 'while :; do :; done' &
    busy_pids+=($!)
  done
  # Each one is the loop before the run starts, not a fork of this shell
  # still on its way to exec it (a run's zkbench once found 1 of 2).
  local p
  for p in "${busy_pids[@]}"; do
    for ((i = 0; i < 100; i++)); do
      grep -qa 'while :; do :; done' "/proc/$p/cmdline" 2>/dev/null && break
      sleep 0.01
    done
  done
}
busy_stop() {
  local p
  for p in "${busy_pids[@]}"; do kill -9 -- "-$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  busy_pids=()
}

results="$work/results.jsonl"
# run_one PASS N SIDE "WORKLOAD CONNS DEPTH SIZE": one row against one side's
# members, its line appended to $results.
run_one() {
  local pass=$1 n=$2 side=$3 w conns depth size hosts groups keys total w0 w1 avail line try i errs ok prefix
  read -r w conns depth size <<< "$4"
  local r=$4
  hosts=$zkd_hosts; [[ $side == zk ]] && hosts=$zk_hosts
  # What the warm-up and the timed run share: the row itself.
  local row=(--server "$hosts" --workload "$w" --conns "$conns" --depth "$depth" --size "$size" --fill "$fill")
  if ((warmup > 0)); then
    "$bench" "${row[@]}" --seconds "$warmup" --keys 100 --prefix "/w${pass}_$n$side" > /dev/null ||
      echo "bench.sh: the warm-up before $side $r failed (pass $pass); timing it anyway" >&2
  fi
  settle "$side $r"
  # This side's servers, whose CPU time over the run zkbench reports.
  groups=("${zkd_groups[@]}"); [[ $side == zk ]] && groups=("${zk_groups[@]}")
  # A delete run ends when its znodes are gone: enough of them that a
  # many-connection run lasts a second or more (setup creates them one
  # request at a time per connection, not timed).
  keys=1000
  if [[ $w == delete ]]; then
    total=20000
    ((conns > 1)) && total=$((size > 1000 ? 60000 : 200000))
    keys=$((total / conns + 1))
  fi
  # What the disks wrote for this run (the other server is idle or down),
  # from its start until the machine is quiet after it: its setup (the
  # znodes a set or delete run works on), the run, the background work
  # it left (RocksDB flushes and compactions, ZooKeeper's snapshots)
  # and the file system's journal. Counted at the device, not from a
  # process's write_bytes: on this machine's kernel that counted six
  # times the bytes an ensemble member's write calls passed (165 MB
  # against 27 MB of wchar in 4 s), likely whole page-cache folios
  # billed as they are dirtied.
  w0=$(disk_sectors_written)
  avail=$(mem_available_mib)
  # A run that fails (a member dropped connections while it settled, seen
  # with ZooKeeper's ensemble right after start), or that ends with errors
  # (a connection lost on the way leaves it few ops: kept, a 1x1 delete at
  # about 5 ops/s against about 990 in the other pass dragged its row's
  # median), is run again under another prefix, and said so; a third try
  # with errors is kept and flagged under the table.
  #
  # The znodes a run works on are created first, by a zkbench of their
  # own, and the machine is let settle before the timed run: the setup's
  # background work (flushing the 200 MB a 1x1 10 KiB delete run creates
  # first) is not billed to the run, as a ZooKeeper snapshot left by an
  # earlier row is not.
  for try in 1 2 3; do
    busy_start
    ok=0
    prefix="/b${pass}_$n$side$try"
    if "$bench" "${row[@]}" --keys "$keys" --prefix "$prefix" --setup only; then
      busy_stop
      settle "$side $r, after its setup"
      busy_start
      line=$("$bench" "${row[@]}" --seconds "$seconds" --keys "$keys" --prefix "$prefix" \
        --setup skip --cpu-of "$(IFS=,; echo "${groups[*]}")") && ok=1
    fi
    busy_stop
    if ((ok)); then
      [[ $line =~ \"errors\":([0-9]+) ]] && errs=${BASH_REMATCH[1]} || errs=0
      ((errs == 0 || try == 3)) && break
      echo "bench.sh: $side $r had $errs error(s) (pass $pass, try $try)" >&2
    else
      echo "bench.sh: $side $r failed (pass $pass, try $try)" >&2
    fi
    # What the members said about it (elections, expiries, closed clients).
    if [[ $side == zkd ]]; then
      for ((i = 1; i <= members; i++)); do
        grep -E 'WARN|ERROR|event=election|closing' "$pdir/zkd$i.log" | tail -5 | sed "s/^/  zkd$i: /" >&2 || true
      done
    fi
    ((try < 3)) || exit 1
    sleep 2
  done
  # The run's background work is waited out before its bytes are
  # read (and so not billed to the next run).
  settle "after $side $r"
  w1=$(disk_sectors_written)
  echo "{\"server\":\"$side\",\"pass\":$pass,\"written\":$(((w1 - w0) * 512)),\"avail_mib\":$avail,${line#\{}" >> "$results"
  ((keep_znodes)) && return 0
  # Its znodes go (see --keep-znodes), once what it wrote is counted; the
  # next run's settle waits out the deletes' background work.
  local cleared=("/b${pass}_$n$side"{1..3})
  ((warmup > 0)) && cleared+=("/w${pass}_$n$side")
  for prefix in "${cleared[@]}"; do
    "$bench" --server "$hosts" --workload clear --conns 8 --depth 64 --prefix "$prefix" > /dev/null ||
      echo "bench.sh: could not clear $prefix on $side; the rows after $r run on a bigger tree" >&2
  done
}
rss_of() { # total RSS (KiB) of processes whose command line matches $1
  local total=0 p
  for p in $(pgrep -f "$1" || true); do total=$((total + $(ps -o rss= -p "$p" | tr -d ' '))); done
  echo "$total"
}
# The disk's floor as each block of runs begins (below): the disk of a
# shared machine drifts (on the build machine, one 4 KiB direct write +
# fdatasync at a time took 73-88 us p50 over half an hour, then 96 us),
# and a row of lone writes compares two servers measured minutes apart.
floor="$work/floor"
mkdir -p "$floor"
# disk_floor SIZE SECONDS: one appender per member (an ensemble's members
# share this disk), each one SIZE-byte write + fdatasync at a time; the
# zkbench report line.
disk_floor() {
  "$bench" --workload fsync --dir "$floor" --conns "$members" --size "$1" --seconds "$2"
}
block_floors="$work/block-floors"
floor_before() {
  settle "the disk floor before the runs of $2, pass $1"
  local r
  r=$(disk_floor 100 1)
  echo "{\"side\":\"$2\",\"pass\":$1,${r#\{}" >> "$block_floors"
}
declare -A rss
for ((pass = 1; pass <= repeat; pass++)); do
  # The server that goes second may inherit the first one's leftovers (a
  # warmer page cache, a cooler CPU): with --repeat they take turns.
  sides=(zkd zk); ((pass % 2 == 0)) && sides=(zk zkd)
  # Alone (the default), each side's members are up only for its own runs:
  # every row against one server, then every row against the other. With
  # --together both are up for the whole pass and the rows alternate; then
  # each side runs with the other's RSS taken, and ZooKeeper's three JVMs
  # (default heap, a quarter of the machine's memory each) held 13-14 GB of
  # the 24 GB build machine by the end of an ensemble table. That much
  # matters: a fresh zkd ensemble's create 16x32 10 KiB did
  # 10.1k/11.1k/11.0k ops/s alone and 4.0k-8.7k (24 runs) with another
  # process holding 14 GB, like the 5.3k of the table it was found in.
  if ((together)); then blocks=("${sides[*]}"); else blocks=("${sides[@]}"); fi
  for block in "${blocks[@]}"; do
    read -ra up <<< "$block"
    floor_before "$pass" "${up[*]}"
    start_servers "$pass" "${up[@]}"
    n=0
    for r in "${runs[@]}"; do
      n=$((n + 1))
      for side in "${up[@]}"; do run_one "$pass" "$n" "$side" "$r"; done
    done
    if ((pass == repeat)); then
      for side in "${up[@]}"; do
        if [[ $side == zkd ]]; then rss[zkd]=$(rss_of " serve $pdir/zkd"); else rss[zk]=$(rss_of "$pdir/zk[0-9]/zoo.cfg"); fi
      done
    fi
    stop_servers "${up[@]}"
  done
done

# The disk's floor, measured now on the same disk: a server with fsync on
# answers a lone write no faster than one small append is made durable.
floors=()
for size in 100 10240; do
  settle "disk floor $size"
  floors+=("$(disk_floor "$size" "$seconds")")
done

python3 - "$results" "$repeat" "$together" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
repeat = int(sys.argv[2])
together = sys.argv[3] == "1"
key = lambda r: (r["workload"], r["conns"], r["depth"], r["size"])
by = {}
for r in rows:
    by.setdefault(key(r), {}).setdefault(r["server"], []).append(r)
# One pass: its numbers. Several: each server's median of each number, and
# the lowest and highest of the ratios the passes gave one by one.
med = lambda rs, f: statistics.median(r[f] for r in rs)
# Setup included (see w0 above), so a read or delete run shows what its
# setup wrote spread over its ops.
per_op = lambda rs: f"{statistics.median(r['written'] / max(r['ops'], 1) for r in rs) / 1024:.1f}"
cpu_per_op = lambda rs: f"{med(rs, 'server_cpu_us_per_op'):.0f}"
lat = lambda rs: "/".join(f"{med(rs, f):.0f}" for f in ("p50_us", "p99_us", "p999_us"))
if repeat > 1:
    print(f"Medians of {repeat} passes; 'pass ratios' is the range of zkd/ZK over the passes.")
print(f"{'workload':<12}{'conns':>6}{'depth':>6}{'size':>7} | {'zkd ops/s':>10}{'ZK ops/s':>10}{'ratio':>7} |"
      f" {'zkd p50/p99/p99.9 us':>22} {'ZK p50/p99/p99.9 us':>22} | bench cpu% | disk KiB/op zkd ZK"
      f" | server cpu us/op zkd ZK"
      + (" | pass ratios" if repeat > 1 else ""))
for k, v in by.items():
    a, b = v["zkd"], v["zk"]
    ao, bo = med(a, "ops_per_s"), med(b, "ops_per_s")
    ratio = ao / bo if bo else float("inf")
    line = (f"{k[0]:<12}{k[1]:>6}{k[2]:>6}{k[3]:>7} | {ao:>10.0f}{bo:>10.0f}{ratio:>7.2f} |"
            f" {lat(a):>22} {lat(b):>22} | {med(a, 'bench_cpu_pct'):.0f}/{med(b, 'bench_cpu_pct'):.0f}"
            f" | {per_op(a):>8} {per_op(b):>6} | {cpu_per_op(a):>12} {cpu_per_op(b):>6}")
    if repeat > 1:
        zk = {r["pass"]: r["ops_per_s"] for r in b}
        rs = [r["ops_per_s"] / zk[r["pass"]] for r in a if zk.get(r["pass"])]
        if rs:
            line += f" | {min(rs):.2f}-{max(rs):.2f}"
    print(line)
avail = lambda side: sorted(r["avail_mib"] for r in rows if r["server"] == side)
za, ka = avail("zkd"), avail("zk")
print(f"Memory available as the runs started (MiB, least/median): zkd's {za[0]}/{statistics.median(za):.0f},"
      f" ZooKeeper's {ka[0]}/{statistics.median(ka):.0f}"
      + (" (both servers' members up)" if together else " (only that server's members up)"))
errs = [r for r in rows if r["errors"]]
if errs:
    print("runs with errors:", [(r["server"], r["pass"], r["workload"], r["errors"]) for r in errs])
PY
printf '%s\n' "${floors[@]}" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print("Disk floor, {conns} appender(s), each one {size}-byte write + fdatasync at a time"
          " (zkbench --workload fsync): {ops_per_s:.0f}/s in all, p50/p99/p99.9"
          " {p50_us}/{p99_us}/{p999_us} us".format(**r))'
python3 - "$block_floors" "$members" <<'PY'
import json, sys
names = {"zkd": "zkd", "zk": "ZooKeeper", "zkd zk": "both", "zk zkd": "both"}
rs = [json.loads(l) for l in open(sys.argv[1])]
print(f"Disk floor as each server's runs began ({sys.argv[2]} appender(s), one 100-byte write"
      " + fdatasync each, p50 us): "
      + "; ".join(f"pass {r['pass']} {names[r['side']]} {r['p50_us']}" for r in rs))
PY
if [[ "${SETTLE:-1}" != 0 ]]; then
  echo "Waited ${settled_s} s in all, in $settle_waits waits, for a quiet machine before and after each run."
fi
echo "RSS after each server's last run ($( ((keep_znodes)) || echo "its znodes deleted; ")all members): zkd ${rss[zkd]} KiB, ZooKeeper ${rss[zk]} KiB"
