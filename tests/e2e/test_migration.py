"""Moving from Apache ZooKeeper to zkd and back: `zkd import` reads a data
directory the Debian ZooKeeper server wrote in this test (snapshot + log), a
client keeps its session across the move, and `zkd export` writes a snapshot
that ZooKeeper itself loads and `zkd import` reads back."""
import os
import signal
import subprocess
import tempfile

import pytest

from conftest import ZKCLI, ZKD, ReferenceZk, Zkd, client


def tree_of(c, path="/", out=None):
    """path -> (data, czxid, mzxid, version, cversion, ephemeralOwner, numChildren, pzxid, acl)."""
    out = {} if out is None else out
    for ch in c.get_children(path):
        q = path.rstrip("/") + "/" + ch
        if q.startswith("/zookeeper"):
            continue
        try:
            acl, _ = c.get_acls(q)
            data, st = c.get(q)
        except Exception:  # no right to read: compare the stat from exists
            acl, data, st = [], None, c.exists(q)
        out[q] = (data, st.czxid, st.mzxid, st.version, st.cversion, st.ephemeralOwner, st.numChildren, st.pzxid,
                  sorted((a.perms, a.id.scheme, a.id.id) for a in acl))
        if st.numChildren:
            tree_of(c, q, out)
    return out


STARTED = []


def kill(ref):
    if ref.proc and ref.proc.poll() is None:
        os.killpg(ref.proc.pid, signal.SIGKILL)
        ref.proc.wait(10)


@pytest.fixture
def dirs(monkeypatch):
    # Every reference server a test starts is killed at the end, even when an
    # assertion fails half way.
    start = ReferenceZk.start

    def tracked(self):
        STARTED.append(self)
        return start(self)

    monkeypatch.setattr(ReferenceZk, "start", tracked)
    ds = [tempfile.mkdtemp(prefix="migrate-") for _ in range(3)]
    yield ds
    while STARTED:
        kill(STARTED.pop())
    for d in ds:
        subprocess.run(["rm", "-rf", d])


def test_import_from_zookeeper_keeps_tree_acls_and_sessions(dirs):
    from kazoo.client import KazooClient
    from kazoo.security import make_digest_acl
    ref = ReferenceZk(dirs[0]).start()
    zk = client(ref.hosts)
    zk.create("/app/config", b"v1", makepath=True)
    zk.set("/app/config", b"v2")
    zk.create("/app/big", os.urandom(500_000))
    zk.create("/app/eph", b"alive", ephemeral=True)
    for _ in range(3):
        zk.create("/app/q/job-", b"j", sequence=True, makepath=True)
    zk.create("/app/secret", b"s", acl=[make_digest_acl("u", "p", all=True)])
    # Container and TTL nodes through zkCli (Debian's kazoo 2.8 has no API for them).
    cli = subprocess.run([ZKCLI, "-server", ref.hosts, "create", "-c", "/app/box", ""], capture_output=True,
                         text=True, timeout=60)
    assert "Created /app/box" in cli.stdout + cli.stderr, cli.stdout + cli.stderr
    cli = subprocess.run([ZKCLI, "-server", ref.hosts, "create", "-t", "3600000", "/app/lease", "t"],
                         capture_output=True, text=True, timeout=60)
    assert "Created /app/lease" in cli.stdout + cli.stderr, cli.stdout + cli.stderr
    zk.create("/app/box/item", b"i")
    t = zk.transaction()
    t.create("/app/m1", b"1")
    t.create("/app/m2", b"2")
    t.commit()
    zk.delete("/app/m1")
    zk.delete("/app/q/job-0000000000")
    want = tree_of(zk)
    session = zk.client_id
    # Power off: the session is still open in ZooKeeper's data.
    kill(ref)
    z = Zkd(dirs[1])
    r = subprocess.run([ZKD, "import", ref.data, z.cfg_path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout and " sessions " in r.stdout
    z.start()
    try:
        c = KazooClient(hosts=z.hosts, client_id=session)
        c.start(timeout=15)
        try:
            assert c.client_id[0] == session[0]  # the same session, not a new one
            assert tree_of(c) == want
            assert c.exists("/app/eph").ephemeralOwner == session[0]
            # The container still behaves as one: emptied, the server reaps it.
            c.delete("/app/box/item")
            import time
            deadline = time.time() + 30
            while c.exists("/app/box") is not None and time.time() < deadline:
                time.sleep(0.1)
            assert c.exists("/app/box") is None
            # Sequence numbers continue where ZooKeeper left them.
            assert c.create("/app/q/job-", b"", sequence=True) == "/app/q/job-0000000003"
        finally:
            c.stop()
            c.close()
    finally:
        z.stop()


def test_export_is_a_snapshot_zookeeper_loads_and_zkd_reimports(dirs):
    z = Zkd(dirs[0]).start()
    zk = client(z.hosts)
    zk.create("/x/y", b"data", makepath=True)
    zk.set("/x", b"top")
    zk.create("/x/z", b"zz")
    zk.delete("/x/z")
    want = tree_of(zk)
    zk.stop()
    zk.close()
    z.stop()
    ref = ReferenceZk(dirs[1])
    os.makedirs(os.path.join(ref.data, "version-2"))
    r = subprocess.run([ZKD, "export", z.cfg_path, os.path.join(ref.data, "version-2")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ref.start()
    try:
        c = client(ref.hosts)
        assert tree_of(c) == want  # Apache ZooKeeper serves zkd's export as is
        c.stop()
        c.close()
    finally:
        ref.stop()
    snap = [f for f in os.listdir(os.path.join(ref.data, "version-2")) if f.startswith("snapshot.")][0]
    z2 = Zkd(dirs[2])
    r = subprocess.run([ZKD, "import", os.path.join(ref.data, "version-2", snap), z2.cfg_path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    z2.start()
    try:
        c = client(z2.hosts)
        assert tree_of(c) == want
        c.stop()
        c.close()
    finally:
        z2.stop()


def test_import_refuses_bad_input_and_existing_stores(dirs, tmp_path):
    z = Zkd(dirs[0]).start()
    z.stop()
    junk = tmp_path / "snapshot.5"
    junk.write_bytes(b"not a snapshot at all")
    fresh = Zkd(dirs[1])
    r = subprocess.run([ZKD, "import", str(junk), fresh.cfg_path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "snapshot" in r.stderr
    r = subprocess.run([ZKD, "import", str(tmp_path), fresh.cfg_path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1  # only a bad snapshot there: refused, nothing half-written
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([ZKD, "import", str(empty), fresh.cfg_path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no ZooKeeper snapshot or log" in r.stderr
    # zkd's own store is never overwritten.
    ref = ReferenceZk(dirs[2]).start()
    kill(ref)
    r = subprocess.run([ZKD, "import", ref.data, z.cfg_path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "already holds a zkd store" in r.stderr


def test_torn_log_tail_imports_the_intact_prefix(dirs):
    ref = ReferenceZk(dirs[0]).start()
    zk = client(ref.hosts)
    for i in range(20):
        zk.create(f"/n{i:02d}", b"%d" % i)
    kill(ref)
    v2 = os.path.join(ref.data, "version-2")
    log = sorted(f for f in os.listdir(v2) if f.startswith("log."))[-1]
    path = os.path.join(v2, log)
    raw = open(path, "rb").read()
    # Cut inside the last entry (the file's zero padding starts after it).
    end = len(raw.rstrip(b"\0"))
    with open(path, "wb") as f:
        f.write(raw[:end - 10])
    z = Zkd(dirs[1])
    r = subprocess.run([ZKD, "import", ref.data, z.cfg_path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "torn" in r.stdout
    z.start()
    try:
        c = client(z.hosts)
        names = sorted(n for n in c.get_children("/") if n.startswith("n"))
        assert names == [f"n{i:02d}" for i in range(19)]  # all but the torn last one
        c.stop()
        c.close()
    finally:
        z.stop()
