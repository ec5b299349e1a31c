"""Mounting and unmounting zkfs the ways FUSE filesystems are used: as a
daemon, from mount(8)/fstab, read-only; and failing clearly on bad input."""
import os
import subprocess
import tempfile

import pytest

from conftest import wait_until
from zkfs_mount import ZKFS, Mount, mounted, sh, tree  # noqa: F401


@pytest.fixture(scope="module")
def zkfs_server(zkd_module):
    return zkd_module


@pytest.fixture
def mp():
    d = tempfile.mkdtemp(prefix="zkfs-mp-")
    yield d
    if mounted(d):
        subprocess.run(["umount", "-l", d])
    os.rmdir(d)


def zkfs_pids(mountpoint):
    r = subprocess.run(["pgrep", "-f", f"zkfs .* {mountpoint}"], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def test_daemon_mode_and_fusermount_unmount(tree, zkfs_server, mp):
    zk, root = tree
    r = subprocess.run([ZKFS, zkfs_server.hosts + root, mp, "-o", "timeout=4000"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(mp)  # mounted by the time the command returns
    sh(f"echo '{mp}@ephemeral' > /dev/null; echo me > '{mp}/eph@ephemeral'")
    assert zk.exists(root + "/eph") is not None
    assert zkfs_pids(mp)
    sh(f"fusermount3 -u {mp}")
    wait_until(lambda: not zkfs_pids(mp), 10, what="zkfs to exit after unmount")
    # The session was closed at unmount: the ephemeral went at once.
    wait_until(lambda: zk.exists(root + "/eph") is None, 5, what="ephemeral gone at unmount")


def test_mount_t_fuse_zkfs_as_from_fstab(tree, zkfs_server, mp):
    zk, root = tree
    zk.create(root + "/f", b"via mount(8)")
    # mount(8) runs helpers with a sanitised PATH: fstab users install zkfs in
    # a system directory. Put it there for this test only if nothing is there.
    link = "/usr/local/sbin/zkfs"
    made = not os.path.lexists(link)
    if made:
        os.symlink(ZKFS, link)
    try:
        r = subprocess.run(["mount", "-t", "fuse.zkfs", "-o", "timeout=4000,_netdev,noatime",
                            zkfs_server.hosts + root, mp], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert open(os.path.join(mp, "f")).read() == "via mount(8)"
        assert f" {mp} fuse" in open("/proc/mounts").read()
        sh(f"umount {mp}")
        wait_until(lambda: not zkfs_pids(mp), 10, what="zkfs to exit after umount")
    finally:
        if made:
            os.unlink(link)
    # The older form names the program: no installation needed.
    r = subprocess.run(["mount", "-t", "fuse", f"{ZKFS}#{zkfs_server.hosts + root}", mp, "-o", "timeout=4000"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(mp, "f")).read() == "via mount(8)"
    sh(f"umount {mp}")


def test_sigterm_unmounts_a_busy_mount(tree, zkfs_server):
    """A process sitting in the mount makes plain umount fail with EBUSY;
    SIGTERM must still take the mount away (lazily, as libfuse does), keep the
    open directory usable, and end zkfs once the last user leaves."""
    zk, root = tree
    zk.create(root + "/kept", b"v")
    m = Mount(zkfs_server.hosts, root)
    holder = subprocess.Popen(["bash", "-c", "read line; cat kept; echo; read line"], cwd=m.dir,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        m.proc.terminate()
        wait_until(lambda: not mounted(m.dir), 10, what="busy mount detached after SIGTERM")
        assert m.proc.poll() is None  # still serving the holder's working directory
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "v\n"
        holder.stdin.write("done\n")
        holder.stdin.flush()
        holder.wait(10)
        m.proc.wait(10)
        assert "was busy: detached" in m.logtext()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)
        m.close()


def test_read_only_mount(tree, zkfs_server):
    zk, root = tree
    zk.create(root + "/c", b"v")
    m = Mount(zkfs_server.hosts, root, opts="ro,timeout=4000")
    try:
        r = sh(f"echo x > {m.p('c')}", check=False)
        assert r.returncode != 0 and "Read-only" in r.stderr
        assert sh(f"mkdir {m.p('d')}", check=False).returncode != 0
        assert zk.get(root + "/c")[0] == b"v"
        assert oct(os.stat(m.p("c")).st_mode & 0o777) == "0o444"
        # Other clients' changes still reach a read-only mount.
        zk.set(root + "/c", b"w")
        assert open(m.p("c")).read() == "w"
    finally:
        m.close()


def test_connect_string_with_a_dead_server_first(tree, zkfs_server):
    zk, root = tree
    m = Mount("127.0.0.1:1," + zkfs_server.hosts, root, opts="timeout=4000,sync_read")
    try:
        sh(f"echo ok > {m.p('x')}")
        assert zk.get(root + "/x")[0] == b"ok\n"
        assert open(m.p("x")).read() == "ok\n"
    finally:
        m.close()


def test_bad_input_fails_with_a_clear_message(zkfs_server, mp):
    r = subprocess.run([ZKFS, zkfs_server.hosts, mp, "-o", "bogus=1"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 64 and "bogus" in r.stderr
    r = subprocess.run([ZKFS, zkfs_server.hosts, mp + "/nope"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "not a directory" in r.stderr
    r = subprocess.run([ZKFS, "127.0.0.1:1", mp, "-o", "timeout=1000"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot reach" in r.stderr
    r = subprocess.run([ZKFS, zkfs_server.hosts + "/no/such/chroot", mp], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "/no/such/chroot" in r.stderr
    assert not os.path.ismount(mp)
    r = subprocess.run([ZKFS, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage" in r.stdout
