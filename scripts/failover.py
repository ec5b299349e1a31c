#!/usr/bin/python3
"""Measures leader failover of a 3-member ensemble: zkd and Apache ZooKeeper
3.8.0 on loopback, same zoo.cfg timing (tickTime 2000, initLimit 10,
syncLimit 5) in the same run. Each round kills the leader with SIGKILL while
a client writes, and times from the kill to the first create accepted by
the survivors; the killed member is then restarted and rejoins.

Usage: scripts/failover.py [--help] [--rounds N] [--only zkd|zk]
  --rounds N   kills per system (default 10)
  --only S     measure one system
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/cache/zkfs-target")
ZKD = os.environ.get("ZKD_BIN", os.path.join(TARGET, "release", "zkd"))
ZK_SERVER_SH = "/usr/share/zookeeper/bin/zkServer.sh"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four(port, word):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(word.encode())
            out = b""
            while True:
                c = s.recv(65536)
                if not c:
                    return out.decode()
                out += c
    except OSError:
        return ""


def mode(port):
    for line in four(port, "srvr").splitlines():
        if line.startswith("Mode:"):
            return line.split()[1]
    return None


class Ensemble:
    def __init__(self, kind, tmp):
        self.kind, self.tmp = kind, tmp
        self.ids = [1, 2, 3]
        self.cport = {i: free_port() for i in self.ids}
        q = {i: free_port() for i in self.ids}
        e = {i: free_port() for i in self.ids}
        self.procs = {}
        for i in self.ids:
            d = os.path.join(tmp, f"n{i}")
            os.makedirs(os.path.join(d, "data"))
            with open(os.path.join(d, "data", "myid"), "w") as f:
                f.write(f"{i}\n")
            with open(os.path.join(d, "zoo.cfg"), "w") as f:
                f.write(
                    f"tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={d}/data\n"
                    f"clientPort={self.cport[i]}\nclientPortAddress=127.0.0.1\n"
                    "4lw.commands.whitelist=*\nadmin.enableServer=false\nmaxSessionTimeout=60000\n"
                    + "".join(f"server.{j}=127.0.0.1:{q[j]}:{e[j]}\n" for j in self.ids)
                )

    def start(self, i):
        d = os.path.join(self.tmp, f"n{i}")
        log = open(os.path.join(d, "out.log"), "a")
        if self.kind == "zkd":
            cmd = [ZKD, "serve", os.path.join(d, "zoo.cfg")]
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        else:
            cmd = [ZK_SERVER_SH, "start-foreground", os.path.join(d, "zoo.cfg")]
            env = dict(os.environ, ZOOCFGDIR=d, ZOO_LOG_DIR=d, ZOO_LOG4J_PROP="WARN,ROLLINGFILE")
        self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)

    def kill(self, i):
        p = self.procs.pop(i)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def wait_serving(self, ids, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(mode(self.cport[i]) in ("leader", "follower") for i in ids):
                return
            time.sleep(0.05)
        raise SystemExit(f"{self.kind}: members {ids} not serving after {timeout}s")

    def leader(self):
        for i in self.ids:
            if i in self.procs and mode(self.cport[i]) == "leader":
                return i
        return None

    def close(self):
        for i in list(self.procs):
            self.kill(i)


def first_write_after(ens, survivors, t0, n):
    from kazoo.client import KazooClient  # Debian's python3-kazoo (/usr/bin/python3)

    hosts = ",".join(f"127.0.0.1:{ens.cport[i]}" for i in survivors)
    c = KazooClient(hosts=hosts, timeout=30,
                    connection_retry=dict(max_tries=-1, delay=0.005, max_delay=0.05, backoff=1.2))
    c.start(timeout=120)
    try:
        while time.monotonic() - t0 < 120:
            try:
                c.create(f"/failover-{n}", b"")
                return time.monotonic() - t0
            except Exception:
                time.sleep(0.002)
        raise SystemExit("no write accepted within 120 s")
    finally:
        c.stop()
        c.close()


def measure(kind, rounds):
    tmp = tempfile.mkdtemp(prefix=f"failover-{kind}-")
    ens = Ensemble(kind, tmp)
    try:
        for i in ens.ids:
            ens.start(i)
        ens.wait_serving(ens.ids)
        times = []
        for n in range(rounds):
            leader = ens.leader()
            t0 = time.monotonic()
            ens.kill(leader)
            survivors = [i for i in ens.ids if i != leader]
            times.append(first_write_after(ens, survivors, t0, n))
            ens.start(leader)
            ens.wait_serving(ens.ids)
            time.sleep(0.5)
        return times
    finally:
        ens.close()
        if os.environ.get("KEEP"):
            print(f"{kind}: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    rounds, only = 10, None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if a == "--rounds":
            rounds = int(args.pop(0))
        elif a == "--only":
            only = args.pop(0)
        else:
            print(f"failover.py: unknown argument {a}", file=sys.stderr)
            return 2
    results = {}
    for kind in ("zkd", "zk"):
        if only in (None, kind):
            results[kind] = measure(kind, rounds)
    print(f"{'system':<10}{'rounds':>7}{'min ms':>9}{'p50 ms':>9}{'max ms':>9}")
    for kind, t in results.items():
        ms = sorted(x * 1000 for x in t)
        print(f"{kind:<10}{len(ms):>7}{ms[0]:>9.0f}{statistics.median(ms):>9.0f}{ms[-1]:>9.0f}")
    if len(results) == 2:
        r = statistics.median(results["zkd"]) / statistics.median(results["zk"])
        print(f"zkd/ZooKeeper median failover time: {r:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
