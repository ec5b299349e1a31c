"""Crash safety: kill -9 under concurrent writers, restart, and check that
every acknowledged write survived, no multi is half-applied, and sessions
come back (their ephemerals stay if the client returns in time, go if not)."""
import glob
import hashlib
import os
import threading
import time
import uuid

from kazoo.exceptions import KazooException, NodeExistsError
from kazoo.retry import ForceRetryError

import rawzk
from conftest import client, wait_until


class Writer(threading.Thread):
    def __init__(self, hosts, idx, base):
        super().__init__(daemon=True)
        self.zk = client(hosts, timeout=4.0, connection_retry={"max_tries": 0})
        self.idx, self.base = idx, base
        self.acked = []          # (path, data) of creates that returned
        self.pairs_acked = []
        self.attempted = set()
        self.counter_acked = 0
        self.counter_tried = 0
        self.stop = threading.Event()

    def run(self):
        zk, i = self.zk, self.idx
        zk.ensure_path(f"{self.base}/c{i}") if False else None
        n = 0
        while not self.stop.is_set() and n < 100000:
            n += 1
            path = f"{self.base}/w{i}-{n}"
            data = f"{i}:{n}".encode()
            self.attempted.add(path)
            try:
                zk.create(path, data)
                self.acked.append((path, data))
                tx = zk.transaction()
                tx.create(f"{self.base}/pa{i}-{n}", data)
                tx.create(f"{self.base}/pb{i}-{n}", data)
                self.counter_tried = n
                tx.set_data(f"{self.base}/c{i}", str(n).encode())
                res = tx.commit()
                if all(not isinstance(r, Exception) for r in res):
                    self.pairs_acked.append(n)
                    self.counter_acked = n
            except Exception:
                return


def run_crash_cycle(server, base, writers_n=4, load_s=1.5):
    setup = client(server.hosts)
    for i in range(writers_n):
        setup.ensure_path(f"{base}/c{i}")
    setup.stop()
    writers = [Writer(server.hosts, i, base) for i in range(writers_n)]
    for w in writers:
        w.start()
    time.sleep(load_s)
    server.kill9()
    for w in writers:
        w.stop.set()
        w.join(15)
        try:
            w.zk.stop()
            w.zk.close()
        except Exception:
            pass
    server.start()
    zk = client(server.hosts)
    total_acked = 0
    for w in writers:
        for path, data in w.acked:
            got = zk.get(path)[0]
            assert got == data, f"acknowledged create {path} lost or changed: {got!r}"
        total_acked += len(w.acked)
        kids = set(zk.get_children(base))
        mine_w = {k for k in kids if k.startswith(f"w{w.idx}-")}
        assert {f"{base}/{k}" for k in mine_w} <= w.attempted
        for k in kids:
            if k.startswith(f"pa{w.idx}-"):
                n = k.split("-")[1]
                assert f"pb{w.idx}-{n}" in kids, f"half-applied multi: {k} without its pair"
            if k.startswith(f"pb{w.idx}-"):
                n = k.split("-")[1]
                assert f"pa{w.idx}-{n}" in kids, f"half-applied multi: {k} without its pair"
        for n in w.pairs_acked:
            assert f"pa{w.idx}-{n}" in kids
        counter = int(zk.get(f"{base}/c{w.idx}")[0] or b"0")
        assert w.counter_acked <= counter <= w.counter_tried
    zk.stop()
    return total_acked


def test_kill9_under_load_loses_no_acknowledged_write(zkd):
    total = 0
    for cycle in range(3):
        total += run_crash_cycle(zkd, f"/crash{cycle}", load_s=1.0 + 0.4 * cycle)
    print(f"acknowledged creates across 3 crash cycles: {total}")
    assert total > 100, f"too little load to mean anything: {total} acknowledged creates"


def test_sessions_survive_a_restart_and_expire_if_not_resumed(zkd):
    keep = rawzk.Raw(zkd.port)
    k = keep.handshake(timeout=4000)
    keep.request(1, rawzk.create("/keep", flags=1))
    assert keep.reply()[2] == 0
    lose = rawzk.Raw(zkd.port)
    l = lose.handshake(timeout=800)
    lose.request(1, rawzk.create("/lose", flags=1))
    assert lose.reply()[2] == 0
    zkd.kill9()
    keep.close()
    lose.close()
    zkd.start()
    # The returning client gets its session back, ephemeral intact.
    back = rawzk.Raw(zkd.port)
    assert back.handshake(timeout=4000, session=k["session"], passwd=k["passwd"])["session"] == k["session"]
    back.request(3, rawzk.path_watch("/keep"))
    xid, zxid, err, r = back.reply()
    assert err == 0 and r.stat()["ephemeralOwner"] == k["session"]
    # The one that does not return expires after restart, and its ephemeral goes.
    zk = client(zkd.hosts)
    wait_until(lambda: zk.exists("/lose") is None, 10, what="the abandoned session to expire")
    assert zk.exists("/keep") is not None
    # Keep the returning session alive by pinging while we checked.
    back.request(11, b"", xid=-2)
    back.close()
    zk.stop()


def _wal(server):
    """The transaction log file, and where its records end (it is
    preallocated: zeros follow the last record)."""
    logs = sorted(glob.glob(os.path.join(server.data, "zkd.txnlog", "[0-9a-f]*-*.log")))
    assert logs, "no transaction log in the data directory"
    with open(logs[-1], "rb") as f:
        data = f.read()
    return logs[-1], len(data.rstrip(b"\0"))


def _fill(server, n):
    zk = client(server.hosts)
    for i in range(n):
        zk.create(f"/wal{i:03d}", b"x" * 200)
    zk.stop()
    zk.close()


def test_the_next_log_file_is_zeroed_while_idle_and_taken_by_the_roll(zkd):
    """Once a quarter of the 64 MiB log file is written, the server fills
    the next file with zeros while it is idle (so no write a client waits
    for has to grow a file); the log then rolls into that file, and every
    write is there after a crash."""
    logdir = os.path.join(zkd.data, "zkd.txnlog")
    zk = client(zkd.hosts)

    def value(i):
        return hashlib.sha256(str(i).encode()).digest() * 28000  # 896,000 bytes

    def spares():
        return [(p, os.stat(p)) for p in glob.glob(os.path.join(logdir, "spare-*.log"))]

    for i in range(10):  # 9 MB: under a quarter, nothing is prepared
        zk.create(f"/big{i:03d}", value(i))
    time.sleep(0.5)
    assert spares() == []
    for i in range(10, 20):  # 18 MB
        zk.create(f"/big{i:03d}", value(i))
    wait_until(lambda: any(st.st_size == 64 << 20 for _, st in spares()), 30,
               what="a whole spare log file zeroed ahead")
    (spare, st), = spares()
    with open(spare, "rb") as f:
        assert f.read(1 << 20) == b"\0" * (1 << 20)
    for i in range(20, 80):  # 72 MB: the log rolls
        zk.create(f"/big{i:03d}", value(i))
    logs = sorted(glob.glob(os.path.join(logdir, "[0-9a-f]*-*.log")))
    # (The first file may already be freed: a flush covered it, possibly
    # between the listing and the stat below.)
    inodes = []
    for p in logs:
        try:
            inodes.append(os.stat(p).st_ino)
        except FileNotFoundError:
            pass
    assert st.st_ino in inodes, (logs, spare)
    zk.stop()
    zk.close()
    zkd.kill9()
    zkd.start()
    zk = client(zkd.hosts)
    for i in range(80):
        assert zk.get(f"/big{i:03d}")[0] == value(i), i
    zk.stop()
    zk.close()


def test_a_burst_ending_just_after_the_log_rolls_frees_the_old_file_while_idle(zkd):
    """The roll asks for a checkpoint flush; once it is done the full file
    is freed. Writes used to be the only thing that looked, so a burst
    that stopped right after a roll kept the 64 MiB file on disk (and to
    be read again at the next start) until the next write."""
    logdir = os.path.join(zkd.data, "zkd.txnlog")

    def files():
        return sorted(glob.glob(os.path.join(logdir, "[0-9a-f]*-*.log")))

    zk = client(zkd.hosts)
    first = files()
    assert len(first) == 1, first
    i = 0
    while len(files()) < 2:
        assert i < 100, f"the log did not roll after {i} MB"
        zk.create(f"/roll{i:03d}", hashlib.sha256(str(i).encode()).digest() * 31000)
        i += 1
    assert first[0] in files()
    # No request from here on, this session's pings aside.
    wait_until(lambda: first[0] not in files(), 20,
               what="the rolled-over log file freed with no write after the roll")
    assert len(files()) == 1, files()
    zk.stop()
    zk.close()
    zkd.kill9()
    zkd.start()
    zk = client(zkd.hosts)
    for j in range(i):
        assert zk.exists(f"/roll{j:03d}") is not None, j
    zk.stop()
    zk.close()


def test_big_data_rewritten_stays_in_the_log_and_survives_a_crash(zkd):
    """10 KiB setData over and over on a few hundred znodes: the checkpoint
    refers to that data in the log instead of holding a copy. A znode set
    once in between outlives the log files its data was written in (it is
    copied into the checkpoint before they go), the log stays bounded, and
    after kill -9 every znode reads back its last acknowledged data."""
    import subprocess
    from test_zkbench import ZKBENCH

    logdir = os.path.join(zkd.data, "zkd.txnlog")

    def files():
        return glob.glob(os.path.join(logdir, "[0-9a-f]*-*.log"))

    def value(tag):
        return hashlib.sha256(tag.encode()).digest() * 320  # 10,240 bytes

    def load(seconds, prefix):
        out = subprocess.run(
            [ZKBENCH, "--server", zkd.hosts, "--workload", "set", "--conns", "4", "--depth", "16",
             "--size", "10240", "--fill", "random", "--keys", "100", "--seconds", str(seconds),
             "--prefix", prefix],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr

    zk = client(zkd.hosts)
    zk.create("/kept", value("first"))
    load(1, "/s")  # rewrites: from here on, big data is referred to
    zk.set("/kept", value("kept"))
    most = 0
    for _ in range(30):
        if "event=data_moved" in zkd.logtext():
            break
        load(1, "/s")
        most = max(most, len(files()))
    assert "event=data_moved" in zkd.logtext(), f"no data moved after 30 s of load; {most} log files"
    assert most <= 10, f"{most} log files: the log is bounded at 8 (and one being moved)"
    for i in range(20):
        zk.set(f"/s/c0/k{i}", value(f"last{i}"))
    zk.stop()
    zk.close()
    zkd.kill9()
    zkd.start()
    zk = client(zkd.hosts)
    assert zk.get("/kept")[0] == value("kept")
    for i in range(20):
        assert zk.get(f"/s/c0/k{i}")[0] == value(f"last{i}"), i
    for c in range(4):
        for k in range(100):
            assert len(zk.get(f"/s/c{c}/k{k}")[0]) == 10240
    zk.stop()
    zk.close()


def test_torn_wal_tail_is_dropped_and_the_rest_served(zkd):
    """A crash in the middle of writing the last record leaves it torn: that
    record (never acknowledged in a real crash) is dropped, the rest served."""
    _fill(zkd, 40)
    zkd.kill9()
    wal, end = _wal(zkd)
    with open(wal, "r+b") as f:
        f.seek(end - 7)
        f.write(b"\0" * 7)
    zkd.start()
    zk = client(zkd.hosts)
    names = sorted(n for n in zk.get_children("/") if n.startswith("wal"))
    zk.stop()
    zk.close()
    # Everything before the torn record is there, as a prefix, nothing else lost.
    assert names == [f"wal{i:03d}" for i in range(len(names))]
    assert len(names) >= 39


def test_damage_inside_the_wal_refuses_to_start(zkd):
    """Damage before the tail means acknowledged writes are gone: zkd must not
    start and serve the remains (RocksDB's default would stop there silently)."""
    import subprocess
    from conftest import ZKD
    _fill(zkd, 40)
    zkd.kill9()
    wal, end = _wal(zkd)
    with open(wal, "r+b") as f:
        f.seek(end // 3)
        b = f.read(1)
        f.seek(end // 3)
        f.write(bytes([b[0] ^ 0xFF]))
    for _ in range(2):  # and it stays refused: nothing was rewritten
        r = subprocess.run([ZKD, "serve", zkd.cfg_path], capture_output=True, text=True, timeout=30)
        assert r.returncode == 74, r.stderr[-2000:]
        assert "damaged record" in r.stderr, r.stderr[-2000:]
