"""zkfs as a coordination tool: two mounts standing for two machines, inotify
for other clients' changes, flock as a distributed lock, ephemerals and
sessions. Real mounts, real tools (inotifywait, flock, getfattr), kazoo as
the independent observer."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import wait_until
from zkfs_mount import ZKFS, Mount, mnt, sh, tree, two  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def zkfs_server(zkd_module):
    return zkd_module


class Watcher:
    """inotifywait -m on a directory, collecting 'EVENTS name' lines."""

    def __init__(self, path):
        self.proc = subprocess.Popen(
            ["inotifywait", "-m", "--format", "%e %f", path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # inotifywait prints "Watches established." on stderr when ready.
        line = ""
        deadline = time.time() + 10
        while "established" not in line and time.time() < deadline:
            line = self.proc.stderr.readline()
        self.lines = []
        os.set_blocking(self.proc.stdout.fileno(), False)

    def read(self):
        try:
            chunk = self.proc.stdout.read()
        except TypeError:
            chunk = None
        if chunk:
            self.lines.extend(chunk.splitlines())
        return self.lines

    def wait_for(self, want, timeout=10):
        wait_until(lambda: any(want == l or l.startswith(want.split(" ")[0]) and l.endswith(" " + want.split(" ", 1)[1])
                               for l in self.read()), timeout, what=f"inotify {want!r} (have {self.lines})")

    def close(self):
        self.proc.kill()
        self.proc.wait(5)


def test_change_through_one_mount_is_seen_by_the_other(two):
    a, b = two
    sh(f"echo v1 > {a.p('shared')}")
    assert sh(f"cat {b.p('shared')}").stdout == "v1\n"
    w = Watcher(b.p())
    try:
        sh(f"echo v2 > {a.p('shared')}")
        w.wait_for("MODIFY shared")
        w.wait_for("CLOSE_WRITE,CLOSE shared")
        assert sh(f"cat {b.p('shared')}").stdout == "v2\n"
        sh(f"echo n > {a.p('newfile')}")
        w.wait_for("CREATE newfile")
        sh(f"rm {a.p('newfile')}")
        w.wait_for("DELETE newfile")
        sh(f"mkdir {a.p('newdir')}")
        w.wait_for("CREATE,ISDIR newdir")
    finally:
        w.close()


def test_inotify_reports_other_clients_changes(mnt, tree):
    zk, root = tree
    zk.create(root + "/cfg", b"a")
    os.mkdir(mnt.p("dir"))
    w = Watcher(mnt.p())
    wd = Watcher(mnt.p("dir"))
    try:
        zk.set(root + "/cfg", b"b")
        w.wait_for("MODIFY cfg")
        zk.create(root + "/dir/kid", b"")
        wd.wait_for("CREATE kid")
        zk.delete(root + "/dir/kid")
        wd.wait_for("DELETE kid")
        zk.create(root + "/made", b"x")
        w.wait_for("CREATE made")
        zk.delete(root + "/made")
        w.wait_for("DELETE made")
        # Our own writes are reported once, by the kernel, not echoed again.
        sh(f"echo local > {mnt.p('mine')}")
        time.sleep(0.3)
        assert sum(1 for l in w.read() if l == "CREATE mine") == 1
    finally:
        w.close()
        wd.close()


def test_a_listing_tells_the_kernel_what_a_lookup_would(mnt, tree):
    """`ls -l` gets every entry's attributes with the listing (READDIRPLUS),
    without a lookup per name. They must be what a lookup gives, and zkfs
    must count them as looked up: a change made elsewhere to an entry seen
    only through the listing still reaches an inotify watcher and the cache."""
    from kazoo.security import make_acl

    zk, root = tree
    zk.create(root + "/d/f", b"12345", makepath=True)
    zk.set(root + "/d", b"dirdata")
    zk.create(root + "/d/sub/kid", b"", makepath=True)
    zk.create(root + "/d/ro", b"r", acl=[make_acl("world", "anyone", read=True)])
    # A mount made after the tree: `mnt` looked the names up already, when
    # it repeated the creates for inotify.
    fresh = Mount(mnt.source.split("/")[0], root)
    w = Watcher(fresh.p("d"))
    try:
        names = sorted(l.split()[-1] for l in sh(f"ls -lA {fresh.p('d')}").stdout.splitlines()[1:])
        assert names == [".data", "f", "ro", "sub"]
        listed = {e.name: e.stat(follow_symlinks=False) for e in os.scandir(fresh.p("d"))}
        for name, st in listed.items():
            looked = os.stat(mnt.p("d/" + name))
            fields = ("st_mode", "st_size", "st_ino", "st_nlink", "st_mtime", "st_uid")
            assert [getattr(st, f) for f in fields] == [getattr(looked, f) for f in fields], name
        assert oct(listed["ro"].st_mode & 0o777) == "0o444"
        assert listed["sub"].st_mode & 0o40000 and listed[".data"].st_size == 7
        zk.set(root + "/d/f", b"1234567890")
        w.wait_for("MODIFY f")
        assert os.stat(fresh.p("d/f")).st_size == 10
    finally:
        w.close()
        fresh.close()


def test_zkfs_wait_blocks_until_the_next_change(mnt, tree):
    zk, root = tree
    zk.create(root + "/flag", b"0")
    p = subprocess.Popen([ZKFS, "wait", "-t", "20", mnt.p("flag")], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert p.poll() is None  # really blocking
    zk.set(root + "/flag", b"1")
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and "MODIFY" in out
    # Waiting for a file that does not exist yet returns on its creation.
    p = subprocess.Popen([ZKFS, "wait", "-t", "20", mnt.p("later")], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    zk.create(root + "/later", b"")
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and "CREATE" in out
    r = subprocess.run([ZKFS, "wait", "-t", "0.3", mnt.p("flag")], capture_output=True)
    assert r.returncode == 2


LEGACY_READER = r'''
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
path = sys.argv[1]
fd = libc.inotify_init()
libc.inotify_add_watch(fd, os.path.dirname(path).encode(), 0x8 | 0x80)  # CLOSE_WRITE | MOVED_TO
print("config:", open(path).read().strip(), flush=True)
while True:
    buf = os.read(fd, 4096)
    i = 0
    while i < len(buf):
        wd, mask, cookie, ln = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + ln].rstrip(b"\0").decode()
        i += 16 + ln
        if name == os.path.basename(path):
            print("config:", open(path).read().strip(), flush=True)
'''


def test_legacy_reader_reloads_on_inotify(mnt, tree, tmp_path):
    zk, root = tree
    zk.create(root + "/app.conf", b"level=1")
    prog = tmp_path / "reader.py"
    prog.write_text(LEGACY_READER)
    p = subprocess.Popen([sys.executable, str(prog), mnt.p("app.conf")], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "config: level=1"
        zk.set(root + "/app.conf", b"level=2")
        assert p.stdout.readline().strip() == "config: level=2"
    finally:
        p.kill()
        p.wait(5)


def test_flock_excludes_across_mounts_and_hands_over(two, tree):
    zk, root = tree
    a, b = two
    holder = subprocess.Popen(["flock", a.p("lk"), "-c", "echo held; sleep 30"], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert holder.stdout.readline().strip() == "held"
    r = subprocess.run(["flock", "-n", b.p("lk"), "true"])
    assert r.returncode == 1  # refused while held elsewhere
    waiter = subprocess.Popen(["flock", b.p("lk"), "-c", "echo got"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert waiter.poll() is None  # blocked
    # The holder (flock and the command that inherited its descriptor) dies
    # with kill -9: the file is closed, the lock passes on.
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(5)
    out, _ = waiter.communicate(timeout=20)
    assert out.strip() == "got"
    r = subprocess.run(["flock", "-n", a.p("lk"), "true"])
    assert r.returncode == 0


def test_flock_is_fair_and_tokens_grow(two, tree):
    a, b = two
    log = a.p("order")
    sh(f": > {log}")
    first = subprocess.Popen(["flock", a.p("q"), "-c", "sleep 1"])
    time.sleep(0.3)
    waiters = []
    for i, m in enumerate([b, a, b]):
        waiters.append(subprocess.Popen(
            ["flock", m.p("q"), "-c",
             f"echo {i} $(getfattr --only-values -n user.zk.lock.token {m.p('q')}) >> {log}"]))
        time.sleep(0.3)  # queue in a known order
    first.wait(10)
    for w in waiters:
        assert w.wait(20) == 0
    rows = [l.split() for l in open(log).read().splitlines()]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    tokens = [int(r[1]) for r in rows]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_fcntl_lock_through_python(two):
    import fcntl
    a, b = two
    fa = open(a.p("posix"), "w")
    fcntl.lockf(fa, fcntl.LOCK_EX)
    fb = open(b.p("posix"), "a")
    with pytest.raises(OSError) as e:
        fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert e.value.errno in (errno.EAGAIN, errno.EACCES)
    fa.close()
    fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fb.close()


def test_killed_mount_loses_its_ephemerals(tree, zkfs_server):
    zk, root = tree
    m = Mount(zkfs_server.hosts, root, opts="timeout=2000")
    try:
        sh(f"echo me > '{m.p('member@ephemeral')}'")
        assert zk.exists(root + "/member") is not None
        m.kill9()
        wait_until(lambda: zk.exists(root + "/member") is None, 20, what="ephemeral removed after session timeout")
    finally:
        m.close()


def test_handle_scoped_ephemeral_lives_with_the_descriptor(mnt, tree):
    zk, root = tree
    p = subprocess.Popen(["bash", "-c", f"exec 3>'{mnt.p('svc@handle')}'; echo up; echo addr >&3; sleep 30"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        wait_until(lambda: zk.exists(root + "/svc") is not None and zk.get(root + "/svc")[0] == b"addr\n", 10,
                   what="handle znode with data")
        assert zk.exists(root + "/svc").ephemeralOwner != 0
    finally:
        p.kill()
        p.wait(5)
    # The process died: its descriptor closed, the znode went at once.
    wait_until(lambda: zk.exists(root + "/svc") is None, 5, what="handle znode removed")


def test_noauth_is_eacces_and_digest_option_grants(tree, zkfs_server):
    from kazoo.security import make_digest_acl
    zk, root = tree
    zk.create(root + "/secret", b"s3", acl=[make_digest_acl("alice", "pw", all=True)])
    m = Mount(zkfs_server.hosts, root)
    try:
        with pytest.raises(PermissionError):
            open(m.p("secret")).read()
    finally:
        m.close()
    m = Mount(zkfs_server.hosts, root, opts="timeout=4000,digest=alice:pw")
    try:
        assert open(m.p("secret")).read() == "s3"
        assert oct(os.stat(m.p("secret")).st_mode & 0o777) == "0o644"
    finally:
        m.close()
        zk.delete(root + "/secret")  # needs only the parent's DELETE right


def test_server_restart_keeps_the_session(tree, zkfs_server):
    zk, root = tree
    m = Mount(zkfs_server.hosts, root, opts="timeout=6000")
    try:
        sh(f"echo me > '{m.p('keep@ephemeral')}'")
        session = sh(f"getfattr --only-values -n user.zk.session {m.p()}").stdout
        zkfs_server.restart()
        wait_until(lambda: subprocess.run(["cat", m.p("keep")], capture_output=True).returncode == 0, 20,
                   what="mount usable again")
        assert sh(f"getfattr --only-values -n user.zk.session {m.p()}").stdout == session
        assert zk.exists(root + "/keep") is not None
    finally:
        m.close()


def test_expired_session_fails_distinctly_until_renewed(tree, zkfs_server):
    zk, root = tree
    m = Mount(zkfs_server.hosts, root, opts="timeout=1000")
    try:
        sh(f"echo x > {m.p('f')}")
        old = sh(f"getfattr --only-values -n user.zk.session {m.p()}").stdout
        m.proc.send_signal(signal.SIGSTOP)
        # The server expires the silent session (1 s timeout).
        wait_until(lambda: int(old, 16) not in sessions(zkfs_server), 20,
                   what="session expired")
        m.proc.send_signal(signal.SIGCONT)
        def expired():
            r = subprocess.run(["cat", m.p("f")], capture_output=True, text=True)
            return r.returncode != 0 and "Key has expired" in r.stderr
        wait_until(expired, 20, what="EKEYEXPIRED")
        sh(f"setfattr -n user.zk.session -v renew {m.p()}")
        assert sh(f"cat {m.p('f')}").stdout == "x\n"
        assert sh(f"getfattr --only-values -n user.zk.session {m.p()}").stdout != old
    finally:
        m.proc.send_signal(signal.SIGCONT)
        m.close()


def sessions(server):
    from conftest import four_letter
    out = four_letter(server.port, "cons", 2)
    ids = []
    for line in out.splitlines():
        if "sid=" in line:
            ids.append(int(line.split("sid=")[1].split(",")[0], 16))
    return ids
