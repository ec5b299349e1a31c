#!/usr/bin/python3
"""Usage: scripts/bench-scale.py [--help] [--znodes N] [--sessions N] [--hold S]
                               [--standalone-only] [--ensemble-only]

The scale half of the benchmark: zkd against Apache ZooKeeper 3.8.0 in the
same run, same machine, same disk, both with fsync on and tickTime 2000.

Standalone, per server:
  - populate N znodes (default 1,000,000; 100 bytes each) with zkbench
    (16 connections x 32 in flight); RSS afterwards;
  - kill -9 and restart: time from exec until a client reads the last znode
    created; RSS after the restart;
  - S sessions (default 10,000) each holding a watch on one znode: time to
    open them, RSS while they are held, and the time until all of them got
    the event of one write (p50/p99/max).
Three-member ensemble, per server kind:
  - populate N znodes through all members; total RSS;
  - a follower loses its data directory and restarts: time until it serves
    and reads the last znode (the leader sends it the whole tree);
  - the same again while a client of the leader reads one request after
    another: the longest of those reads (whether the leader keeps serving
    while it reads and sends the tree);
  - RSS after.
Prints one table with zkd/ZooKeeper ratios. Needs root (raises the file
limit for 10,000 sessions) and kazoo (/usr/bin/python3 has Debian's).
Takes about 15 minutes with the defaults; --znodes 100000 --sessions 2000
is a quick look. (--read-loop HOST PATH is the reader process it starts
itself during the second resync, not meant to be run by hand.)
"""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from ports import free_port  # noqa: E402
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/cache/zkfs-target")
ZKD = os.path.join(TARGET, "release", "zkd")
ZKBENCH = os.path.join(TARGET, "release", "zkbench")
ZK_SERVER_SH = "/usr/share/zookeeper/bin/zkServer.sh"
CONNS, DEPTH = 16, 32


def wait_for(pred, timeout, what, interval=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise SystemExit(f"bench-scale: timed out waiting for {what}")


def four(port, word):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(word.encode())
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out.decode(errors="replace")
            out += b


def mode(port):
    for line in four(port, "srvr").splitlines():
        if line.startswith("Mode:"):
            return line.split()[1]
    return None


def rss_kib(pids):
    """RSS of these processes and all their descendants."""
    total = 0
    todo = list(pids)
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total


class Server:
    """One zkd or ZooKeeper process with its own config and data dir."""

    def __init__(self, kind, work, name, myid=None, servers=""):
        self.kind = kind
        self.dir = os.path.join(work, name)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.data)
        self.port = free_port()
        self.cfg = os.path.join(self.dir, "zoo.cfg")
        if myid is not None:
            with open(os.path.join(self.data, "myid"), "w") as f:
                f.write(f"{myid}\n")
        with open(self.cfg, "w") as f:
            f.write(f"tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={self.data}\n"
                    f"clientPort={self.port}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n"
                    f"4lw.commands.whitelist=*\nadmin.enableServer=false\n{servers}")
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "out.log"), "a")
        if self.kind == "zkd":
            self.proc = subprocess.Popen([ZKD, "serve", self.cfg], stdout=log, stderr=log,
                                         start_new_session=True, env=dict(os.environ, RUST_LOG="warn"))
        else:
            env = dict(os.environ, ZOOCFGDIR=self.dir, ZOO_LOG_DIR=self.dir,
                       ZOO_LOG4J_PROP="WARN,ROLLINGFILE")
            self.proc = subprocess.Popen([ZK_SERVER_SH, "start-foreground", self.cfg], stdout=log,
                                         stderr=log, env=env, start_new_session=True)

    def kill(self):
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None

    def wipe(self):
        """Lose the data directory, keep myid."""
        for e in os.listdir(self.data):
            if e != "myid":
                p = os.path.join(self.data, e)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    def rss(self):
        return rss_kib([self.proc.pid]) if self.proc else 0

    def host(self):
        return f"127.0.0.1:{self.port}"


def readable(host, path, timeout=600):
    """Waits until a client connected to `host` reads `path`."""
    from kazoo.client import KazooClient

    def ok():
        c = KazooClient(hosts=host, timeout=10, connection_retry=dict(max_tries=0))
        try:
            c.start(timeout=2)
            c.sync("/")
            return c.exists(path) is not None
        finally:
            c.stop()
            c.close()

    wait_for(ok, timeout, f"{path} readable on {host}", interval=0.05)


def time_start(s, want, last, timeout):
    """Starts `s`: seconds until it serves as `want` and a client reads `last`."""
    t0 = time.monotonic()
    s.start()
    wait_for(lambda: mode(s.port) == want, timeout, f"{s.kind} to serve as {want}", interval=0.01)
    readable(s.host(), last)
    return time.monotonic() - t0


def read_loop(host, path):
    """Reads `path` from `host` one request at a time until stdin closes,
    then prints the longest read in seconds. Run as a process of its own
    (`--read-loop`), so its reads do not share an interpreter with the
    polling it is measured beside."""
    import threading
    from kazoo.client import KazooClient
    c = KazooClient(hosts=host, timeout=30)
    c.start(timeout=10)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    longest = 0.0
    while not stop.is_set():
        t = time.monotonic()
        c.get(path)
        longest = max(longest, time.monotonic() - t)
    c.stop()
    c.close()
    print(longest, flush=True)


def longest_read_during(host, path, work):
    """Runs `work()` while a client of `host` reads `path`, one request at a
    time: returns what `work` returned and the longest read in seconds."""
    reader = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--read-loop", host, path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        result = work()
    finally:
        out, _ = reader.communicate(input="", timeout=60)
    if reader.returncode != 0:
        raise SystemExit(f"bench-scale: a read on {host} failed during the resync (see above)")
    return result, float(out.strip().splitlines()[-1])


def zkbench(hosts, *args):
    out = subprocess.run([ZKBENCH, "--server", hosts, *args], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def populate(hosts, prefix, n):
    r = zkbench(hosts, "--workload", "populate", "--conns", str(CONNS), "--depth", str(DEPTH),
                "--keys", str(n), "--size", "100", "--prefix", prefix)
    if r["errors"]:
        raise SystemExit(f"bench-scale: populate had {r['errors']} errors")
    per = (n + CONNS - 1) // CONNS
    if r["ops"] != per * CONNS:
        raise SystemExit(f"bench-scale: populate created {r['ops']} znodes, not {per * CONNS}")
    return r, f"{prefix}/c{CONNS - 1}/p{per - 1}"


def settle_rss(servers):
    time.sleep(3)
    return sum(s.rss() for s in servers)


def standalone(kind, work, n, sessions, hold):
    s = Server(kind, work, f"{kind}-standalone")
    try:
        return standalone_on(s, n, sessions, hold)
    finally:
        # Whatever failed, no server outlives its (removed) directory.
        s.kill()


def standalone_on(s, n, sessions, hold):
    s.start()
    wait_for(lambda: mode(s.port) == "standalone", 120, f"{s.kind} to serve")
    res = {}
    pop, last = populate(s.host(), "/scale", n)
    res["populate ops/s"] = pop["ops_per_s"]
    res["RSS after populate (MiB)"] = settle_rss([s]) / 1024
    s.kill()
    res["restart to first read (s)"] = time_start(s, "standalone", last, 600)
    res["RSS after restart (MiB)"] = settle_rss([s]) / 1024
    rss0 = s.rss()
    peak = [0]
    fan = subprocess.Popen([ZKBENCH, "--server", s.host(), "--workload", "fanout", "--conns", str(sessions),
                            "--seconds", str(hold), "--prefix", "/fan"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    # Sample the server's RSS while the sessions hold their watches.
    while fan.poll() is None:
        peak[0] = max(peak[0], s.rss())
        time.sleep(0.2)
    out, err = fan.communicate()
    if fan.returncode != 0:
        raise SystemExit(f"bench-scale: fanout failed: {err}")
    f = json.loads(out.strip().splitlines()[-1])
    res[f"{sessions} sessions: open+watch (s)"] = f["setup_secs"]
    res[f"{sessions} sessions: RSS added (MiB)"] = (peak[0] - rss0) / 1024
    res[f"{sessions} sessions: event to all, p50 (ms)"] = f["p50_us"] / 1000
    res[f"{sessions} sessions: event to all, max (ms)"] = f["max_us"] / 1000
    res[f"{sessions} sessions: events missing"] = f["errors"]
    return res


def ensemble(kind, work, n):
    ports = [(free_port(), free_port()) for _ in range(3)]
    servers = "".join(f"server.{i + 1}=127.0.0.1:{q}:{e}\n" for i, (q, e) in enumerate(ports))
    members = [Server(kind, work, f"{kind}-ens{i + 1}", myid=i + 1, servers=servers) for i in range(3)]
    try:
        for m in members:
            m.start()
        wait_for(lambda: sorted(mode(m.port) or "" for m in members) == ["follower", "follower", "leader"],
                 180, f"{kind} ensemble to elect")
        res = {}
        hosts = ",".join(m.host() for m in members)
        pop, last = populate(hosts, "/scale", n)
        res["3-node populate ops/s"] = pop["ops_per_s"]
        res["3-node RSS, all members (MiB)"] = settle_rss(members) / 1024
        f = next(m for m in members if mode(m.port) == "follower")
        leader = next(m for m in members if mode(m.port) == "leader")
        f.kill()
        f.wipe()
        res["3-node wiped follower: start to read (s)"] = time_start(f, "follower", last, 900)
        # Again, with a client reading from the leader: apart, because the
        # reads slow the resync itself (ZooKeeper's took twice as long).
        f.kill()
        f.wipe()
        _, longest = longest_read_during(leader.host(), last,
                                         lambda: time_start(f, "follower", last, 900))
        res["3-node leader's longest read, 2nd resync (ms)"] = longest * 1000
        res["3-node RSS after resync (MiB)"] = settle_rss(members) / 1024
        return res
    finally:
        for m in members:
            m.kill()


def main():
    args = sys.argv[1:]
    if "--help" in args or "-h" in args:
        print(__doc__.strip())
        return
    if args[:1] == ["--read-loop"]:
        return read_loop(args[1], args[2])
    opt = {"--znodes": 1_000_000, "--sessions": 10_000, "--hold": 3}
    flags = set()
    i = 0
    while i < len(args):
        if args[i] in opt:
            opt[args[i]] = int(args[i + 1])
            i += 2
        elif args[i] in ("--standalone-only", "--ensemble-only"):
            flags.add(args[i])
            i += 1
        else:
            raise SystemExit(f"bench-scale: unknown option {args[i]} (see --help)")
    try:
        import kazoo  # noqa: F401
    except ImportError:
        # Found only once a server is up and populated otherwise.
        raise SystemExit(f"bench-scale: kazoo is missing for {sys.executable}; run it as "
                         "scripts/bench-scale.py (/usr/bin/python3 has Debian's python3-kazoo)")
    for b in (ZKD, ZKBENCH):
        if not os.path.exists(b):
            raise SystemExit(f"bench-scale: {b} missing: cargo build --release -p zkd -p zkbench")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(4 * opt["--sessions"] + 1024, soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != -1 else want, hard))
    work = tempfile.mkdtemp(prefix="zkscale.", dir="/var/tmp")
    results = {}
    try:
        for kind in ("zkd", "zk"):
            r = {}
            if "--ensemble-only" not in flags:
                r.update(standalone(kind, work, opt["--znodes"], opt["--sessions"], opt["--hold"]))
            if "--standalone-only" not in flags:
                r.update(ensemble(kind, work, opt["--znodes"]))
            results[kind] = r
            print(f"{kind}: {json.dumps(r)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{opt['--znodes']} znodes of 100 bytes, {opt['--sessions']} watching sessions; "
          "zkd vs ZooKeeper 3.8.0, fsync on, same run")
    print(f"{'measure':<46}{'zkd':>12}{'ZooKeeper':>12}{'zkd/ZK':>9}")
    for k in results["zkd"]:
        a, b = results["zkd"][k], results["zk"].get(k)
        ratio = f"{a / b:.2f}" if b else "-"
        num = lambda v: "-" if v is None else f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"
        print(f"{k:<46}{num(a):>12}{num(b):>12}{ratio:>9}")


if __name__ == "__main__":
    main()
