#!/usr/bin/python3
"""Measures leader failover of a 3-member ensemble: zkd and Apache ZooKeeper
3.8.0 on loopback, same zoo.cfg timing (tickTime 2000, initLimit 10,
syncLimit 5) in the same run. Each round starts a write load (zkbench:
setData from --load sessions spread over all three members, 16 requests in
flight each), measures the rate the leader commits at from its zxid (over
two seconds once the load runs), kills the leader with SIGKILL, and times
from the kill to the first create a fresh client gets accepted by the
survivors; the killed member is then restarted and rejoins.

Usage: scripts/failover.py [--help] [--rounds N] [--only zkd|zk] [--load N]
  --rounds N   kills per system (default 10)
  --only S     measure one system
  --load N     sessions of background write load (default 16; 0: none)
"""
import logging
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
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from ports import free_port  # noqa: E402
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/cache/zkfs-target")
ZKD = os.environ.get("ZKD_BIN", os.path.join(TARGET, "release", "zkd"))
ZKBENCH = os.path.join(TARGET, "release", "zkbench")
ZK_SERVER_SH = "/usr/share/zookeeper/bin/zkServer.sh"


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


def srvr_field(port, name):
    for line in four(port, "srvr").splitlines():
        if line.startswith(name + ":"):
            return line.split()[1]
    return None


def mode(port):
    return srvr_field(port, "Mode")


def zxid_counter(port):
    z = srvr_field(port, "Zxid")
    return int(z, 16) & 0xFFFFFFFF if z else None


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

    # Connection losses while the ensemble elects are expected, not news.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)

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


def commit_rate(port, secs):
    """Writes/s the member at `port` commits over `secs`, from its zxid."""
    z0, t0 = zxid_counter(port), time.monotonic()
    time.sleep(secs)
    z1, t1 = zxid_counter(port), time.monotonic()
    return (z1 - z0) / (t1 - t0) if z0 is not None and z1 is not None else 0.0


def start_load(ens, leader, n, sessions):
    """Starts zkbench writing through every member and returns it with the
    leader's commit rate (over two seconds once the load runs). zkbench is
    killed after the round: its sessions on the dead leader's ensemble go
    with it."""
    hosts = ",".join(f"127.0.0.1:{ens.cport[i]}" for i in ens.ids)
    p = subprocess.Popen([ZKBENCH, "--server", hosts, "--workload", "set", "--conns", str(sessions),
                          "--depth", "16", "--keys", "10", "--seconds", "600",
                          "--prefix", f"/load-{n}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # Setup creates 10 znodes a session in all; the timed run is far
        # faster than 20 a session per second.
        if commit_rate(ens.cport[leader], 1) > 20 * sessions:
            return p, commit_rate(ens.cport[leader], 2)
    p.kill()
    raise SystemExit(f"{ens.kind}: the write load did not start within 60 s")


def measure(kind, rounds, sessions):
    tmp = tempfile.mkdtemp(prefix=f"failover-{kind}-")
    ens = Ensemble(kind, tmp)
    times, rates = [], []
    try:
        for i in ens.ids:
            ens.start(i)
        ens.wait_serving(ens.ids)
        for n in range(rounds):
            leader = ens.leader()
            load = None
            if sessions:
                load, rate = start_load(ens, leader, n, sessions)
                rates.append(rate)
            t0 = time.monotonic()
            ens.kill(leader)
            survivors = [i for i in ens.ids if i != leader]
            try:
                times.append(first_write_after(ens, survivors, t0, n))
            finally:
                if load:
                    load.kill()
                    load.wait(10)
            ens.start(leader)
            ens.wait_serving(ens.ids)
            time.sleep(0.5)
        return times, rates
    finally:
        ens.close()
        if os.environ.get("KEEP"):
            print(f"{kind}: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    rounds, only, sessions = 10, None, 16
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
        elif a == "--load":
            sessions = int(args.pop(0))
        else:
            print(f"failover.py: unknown argument {a}", file=sys.stderr)
            return 2
    results = {}
    for kind in ("zkd", "zk"):
        if only in (None, kind):
            results[kind] = measure(kind, rounds, sessions)
    print(f"load: {sessions} sessions of setData, 16 in flight each")
    print(f"{'system':<10}{'rounds':>7}{'writes/s at kill':>18}{'min ms':>9}{'p50 ms':>9}{'max ms':>9}")
    for kind, (t, rates) in results.items():
        ms = sorted(x * 1000 for x in t)
        rate = f"{statistics.median(rates):.0f}" if rates else "-"
        print(f"{kind:<10}{len(ms):>7}{rate:>18}{ms[0]:>9.0f}{statistics.median(ms):>9.0f}{ms[-1]:>9.0f}")
    if len(results) == 2:
        r = statistics.median(results["zkd"][0]) / statistics.median(results["zk"][0])
        print(f"zkd/ZooKeeper median failover time: {r:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
