"""A real zkfs mount for tests: the zkfs binary in the foreground, a fresh
chroot per mount so tests do not see each other, and a bounded teardown that
never leaves a mount behind."""
import os
import subprocess
import tempfile
import uuid

import pytest

from conftest import TARGET, client, wait_until

ZKFS = os.environ.get("ZKFS_BIN", os.path.join(TARGET, "release", "zkfs"))


def mounted(path):
    """Whether `path` is a mount point, from /proc/self/mounts: unlike
    os.path.ismount this also sees a mount whose zkfs died (stat fails with
    ENOTCONN there)."""
    want = os.path.realpath(path).replace("\\", "\\134").replace(" ", "\\040")
    with open("/proc/self/mounts") as f:
        return any(line.split(" ")[1] == want for line in f)


class Mount:
    def __init__(self, hosts, chroot="", opts="timeout=4000"):
        self.dir = tempfile.mkdtemp(prefix="zkfs-mnt-")
        self.log_path = self.dir + ".log"
        self.source = hosts + chroot
        cmd = [ZKFS, self.source, self.dir, "-f"] + (["-o", opts] if opts else []) + (["-d"] if os.environ.get("ZKFS_DEBUG") else [])
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        wait_until(lambda: os.path.ismount(self.dir) or self.proc.poll() is not None, 20, what="zkfs to mount")
        assert self.proc.poll() is None, self.logtext()

    def p(self, rel=""):
        return os.path.join(self.dir, rel.lstrip("/"))

    def logtext(self):
        with open(self.log_path) as f:
            return f.read()

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        subprocess.run(["umount", "-l", self.dir], stderr=subprocess.DEVNULL)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if mounted(self.dir):
            subprocess.run(["umount", "-l", self.dir], stderr=subprocess.DEVNULL)
        try:
            os.rmdir(self.dir)
        except OSError:
            pass
        self.log.close()
        if not os.environ.get("ZKFS_DEBUG"):
            try:
                os.unlink(self.log_path)
            except OSError:
                pass


def sh(cmd, timeout=20, check=True, **kw):
    """Runs a shell command line; returns CompletedProcess with text output."""
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd!r} exited {r.returncode}: {r.stderr}")
    return r


@pytest.fixture
def tree(zkfs_server):
    """(kazoo client, chroot) of a fresh chroot on the module's server
    (each test module defines `zkfs_server`)."""
    server = zkfs_server
    zk = client(server.hosts)
    chroot = "/t-" + uuid.uuid4().hex[:10]
    zk.create(chroot)
    yield zk, chroot
    zk.delete(chroot, recursive=True)
    zk.stop()
    zk.close()


@pytest.fixture
def mnt(tree, zkfs_server):
    m = Mount(zkfs_server.hosts, tree[1])
    yield m
    m.close()


@pytest.fixture
def two(tree, zkfs_server):
    """Two mounts of the same chroot, standing for two machines."""
    a = Mount(zkfs_server.hosts, tree[1])
    b = Mount(zkfs_server.hosts, tree[1])
    yield a, b
    a.close()
    b.close()
