#!/usr/bin/python3
"""Usage: scripts/bench-zkfs.py [--help] [--quick]

Measures zkfs against the same work done by a direct client (kazoo) and by a
local tmpfs (the floor), with zkfs mounting zkd and Apache ZooKeeper 3.8.0 in
the same run: `cat` and `echo >` of a small file (per-operation latency),
`ls -l` of a directory of 10,000 entries, and `cp -r` of 1,000 small files
into the mount and back out. Needs a built tree (scripts/test.sh or
scripts/run.sh builds it) and root for FUSE. --quick: smaller counts.
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
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from ports import free_port  # noqa: E402
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/cache/zkfs-target")
ZKD = os.path.join(TARGET, "release", "zkd")
ZKFS = os.path.join(TARGET, "release", "zkfs")
ZK_SERVER_SH = "/usr/share/zookeeper/bin/zkServer.sh"


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def ruok(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"srvr")
        return b"Mode" in s.recv(4096)


def start_server(kind, work):
    d = tempfile.mkdtemp(dir=work, prefix=kind + "-")
    port = free_port()
    cfg = os.path.join(d, "zoo.cfg")
    with open(cfg, "w") as f:
        f.write(f"tickTime=2000\ndataDir={d}/data\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
                "4lw.commands.whitelist=*\nmaxClientCnxns=0\nadmin.enableServer=false\n")
    log = open(os.path.join(d, "out.log"), "w")
    if kind == "zkd":
        p = subprocess.Popen([ZKD, "serve", cfg], stdout=log, stderr=log, start_new_session=True,
                             env=dict(os.environ, RUST_LOG="warn"))
    else:
        os.makedirs(os.path.join(d, "data"))
        env = dict(os.environ, ZOOCFGDIR=d, ZOO_LOG_DIR=d, ZOO_LOG4J_PROP="WARN,ROLLINGFILE")
        p = subprocess.Popen([ZK_SERVER_SH, "start-foreground", cfg], stdout=log, stderr=log, env=env,
                             start_new_session=True)
    wait_for(lambda: ruok(port), 60, f"{kind} to serve")
    return p, port


def mount(port, work):
    m = tempfile.mkdtemp(dir=work, prefix="mnt-")
    subprocess.run([ZKFS, f"127.0.0.1:{port}", m, "-o", "timeout=10000"], check=True)
    return m


def lat(fn, n):
    """Runs fn n times; returns (ops/s, p50 ms, p99 ms)."""
    ts = []
    t0 = time.perf_counter()
    for i in range(n):
        a = time.perf_counter()
        fn(i)
        ts.append((time.perf_counter() - a) * 1000)
    total = time.perf_counter() - t0
    ts.sort()
    return n / total, statistics.median(ts), ts[int(len(ts) * 0.99) - 1]


def timed(fn):
    a = time.perf_counter()
    fn()
    return time.perf_counter() - a


def fs_suite(base, n_small, n_dir, n_cp, src):
    """The file workloads on a directory (a mount or tmpfs)."""
    out = {}
    small = os.path.join(base, "small")
    with open(small, "w") as f:
        f.write("x" * 100)

    def cat(_):
        with open(small, "rb") as f:
            f.read()

    def echo(i):
        with open(small, "w") as f:
            f.write("%099d" % i)

    out["cat small file"] = lat(cat, n_small)
    out["echo > small file"] = lat(echo, n_small)
    big = os.path.join(base, "big")
    os.mkdir(big)
    for i in range(n_dir):
        with open(os.path.join(big, "e%05d" % i), "w") as f:
            f.write("v")
    out[f"ls -l of {n_dir}"] = timed(lambda: subprocess.run(["ls", "-l", big], stdout=subprocess.DEVNULL, check=True))
    out[f"cp -r {n_cp} files in"] = timed(lambda: subprocess.run(["cp", "-r", src, os.path.join(base, "copy")],
                                                                    check=True))
    back = tempfile.mkdtemp()
    out[f"cp -r {n_cp} files out"] = timed(lambda: subprocess.run(["cp", "-r", os.path.join(base, "copy"), back],
                                                                     check=True))
    shutil.rmtree(back)
    return out


def kazoo_suite(port, n_small, n_dir, n_cp):
    """The same work through a direct client (kazoo, synchronous calls, as a
    script would write it; the listing is pipelined like zkfs's)."""
    from kazoo.client import KazooClient
    zk = KazooClient(hosts=f"127.0.0.1:{port}")
    zk.start()
    out = {}
    zk.create("/kz/small", b"x" * 100, makepath=True)
    out["cat small file"] = lat(lambda i: zk.get("/kz/small"), n_small)
    out["echo > small file"] = lat(lambda i: zk.set("/kz/small", b"%099d" % i), n_small)
    zk.create("/kz/big")
    for i in range(n_dir):
        zk.create_async("/kz/big/e%05d" % i, b"v")
    zk.sync("/kz")

    def listing():
        kids = zk.get_children("/kz/big")
        for r in [zk.exists_async("/kz/big/" + k) for k in kids]:
            r.get()

    out[f"ls -l of {n_dir}"] = timed(listing)
    zk.create("/kz/copy")
    out[f"cp -r {n_cp} files in"] = timed(lambda: [zk.create("/kz/copy/f%04d" % i, b"y" * 200) for i in range(n_cp)])
    out[f"cp -r {n_cp} files out"] = timed(lambda: [zk.get("/kz/copy/f%04d" % i) for i in range(n_cp)])
    zk.stop()
    zk.close()
    return out


def fmt(v):
    if isinstance(v, tuple):
        ops, p50, p99 = v
        return f"{ops:8.0f}/s p50 {p50:5.2f} p99 {p99:5.2f} ms"
    return f"{v:8.3f} s"


def main():
    if "--help" in sys.argv or "-h" in sys.argv:
        print(__doc__)
        return 0
    quick = "--quick" in sys.argv
    n_small, n_dir, n_cp = (50, 500, 100) if quick else (500, 10_000, 1_000)
    work = tempfile.mkdtemp(prefix="bench-zkfs-", dir="/var/tmp")
    procs, mounts = [], []
    try:
        src = os.path.join(work, "src")
        os.mkdir(src)
        for i in range(n_cp):
            with open(os.path.join(src, "f%04d" % i), "w") as f:
                f.write("y" * 200)
        results = {}
        for kind in ["zkd", "zookeeper"]:
            p, port = start_server(kind, work)
            procs.append(p)
            m = mount(port, work)
            mounts.append(m)
            results[f"zkfs on {kind}"] = fs_suite(m, n_small, n_dir, n_cp, src)
            results[f"kazoo on {kind}"] = kazoo_suite(port, n_small, n_dir, n_cp)
        shm = tempfile.mkdtemp(dir="/dev/shm")
        results["tmpfs"] = fs_suite(shm, n_small, n_dir, n_cp, src)
        shutil.rmtree(shm)
        cols = list(results)
        rows = list(results[cols[0]])
        print(f"{'workload':<22}" + "".join(f"{c:>36}" for c in cols))
        for r in rows:
            print(f"{r:<22}" + "".join(f"{fmt(results[c][r]):>36}" for c in cols))
        z, k = results["zkfs on zkd"], results["zkfs on zookeeper"]
        print("\nzkfs on zkd / zkfs on ZooKeeper (time ratio, < 1 is faster):")
        for r in rows:
            a = z[r][1] if isinstance(z[r], tuple) else z[r]
            b = k[r][1] if isinstance(k[r], tuple) else k[r]
            print(f"  {r:<22} {a / b:6.2f}")
    finally:
        for m in mounts:
            subprocess.run(["fusermount3", "-u", "-z", m], stderr=subprocess.DEVNULL)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
