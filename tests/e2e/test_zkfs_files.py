"""zkfs with the shell tools people use on files, against zkd and against
Apache ZooKeeper: every change is checked through kazoo, an independent client."""
import errno
import os
import subprocess

import pytest

from conftest import wait_until
from zkfs_mount import Mount, mnt, sh, tree  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def zkfs_server(any_server):
    return any_server


def test_echo_cat_printf_tee(mnt, tree):
    zk, root = tree
    sh(f"echo hello > {mnt.p('a')}")
    data, st = zk.get(root + "/a")
    assert data == b"hello\n"
    # One create carrying the data: no empty value was ever visible.
    assert st.version == 0
    assert sh(f"cat {mnt.p('a')}").stdout == "hello\n"
    sh(f"printf 'x\\ty' > {mnt.p('a')}")
    data, st = zk.get(root + "/a")
    assert data == b"x\ty"
    assert st.version == 1  # exactly one setData for the rewrite
    sh(f"echo teed | tee {mnt.p('b')} > /dev/null")
    assert zk.get(root + "/b")[0] == b"teed\n"


def test_binary_data_up_to_the_limit(mnt, tree, tmp_path):
    zk, root = tree
    blob = os.urandom(1_000_000)
    src = tmp_path / "blob"
    src.write_bytes(blob)
    sh(f"cp {src} {mnt.p('blob')}")
    assert zk.get(root + "/blob")[0] == blob
    with open(mnt.p("blob"), "rb") as f:
        assert f.read() == blob
    # Over the server's limit: EFBIG at write time, the old value stays.
    r = sh(f"head -c 1048576 /dev/zero > {mnt.p('blob')}", check=False)
    assert r.returncode != 0 and "File too large" in r.stderr
    assert zk.get(root + "/blob")[0] == blob


def test_append_and_truncate(mnt, tree):
    zk, root = tree
    sh(f"echo a > {mnt.p('f')}; echo b >> {mnt.p('f')}")
    assert zk.get(root + "/f")[0] == b"a\nb\n"
    sh(f"truncate -s 2 {mnt.p('f')}")
    assert zk.get(root + "/f")[0] == b"a\n"
    sh(f": > {mnt.p('f')}")
    # Truncation without a write is sent when the kernel releases the file,
    # which it does just after close returns (see zkfs(8)).
    wait_until(lambda: zk.get(root + "/f")[0] == b"", 10, what="the truncation")
    assert os.path.isfile(mnt.p("f"))  # an empty file is still a file


def test_ls_shows_size_times_and_stable_inodes(mnt, tree):
    zk, root = tree
    zk.create(root + "/cfg", b"12345")
    st = os.stat(mnt.p("cfg"))
    zst = zk.exists(root + "/cfg")
    assert st.st_size == 5
    assert int(st.st_mtime * 1000) == zst.mtime
    assert os.stat(mnt.p("cfg")).st_ino == st.st_ino
    out = sh(f"ls -l {mnt.p()}").stdout
    assert " 5 " in out and "cfg" in out
    second = Mount(mnt.source.split("/")[0], root)
    try:
        assert os.stat(second.p("cfg")).st_ino == st.st_ino
    finally:
        second.close()


def test_directories_do_not_flip(mnt, tree):
    zk, root = tree
    os.makedirs(mnt.p("a/b/c"))
    assert os.path.isdir(mnt.p("a/b/c"))
    assert zk.exists(root + "/a/b/c").numChildren == 0
    # An empty directory made elsewhere stays a directory after its children go.
    zk.create(root + "/svc/web/h1", b"x", makepath=True)
    assert os.path.isdir(mnt.p("svc/web"))
    zk.delete(root + "/svc/web/h1")
    assert os.path.isdir(mnt.p("svc/web"))
    assert os.listdir(mnt.p("svc/web")) == []
    # A znode with data and children: a directory whose data is `.data`.
    zk.create(root + "/both", b"parent-data")
    zk.create(root + "/both/kid", b"k")
    # Another session's write: zkfs hears of the child through its watch and
    # invalidates the kernel's entry. Its own inotify reflection may have
    # looked `both` up as a file in between, so this is not instant.
    wait_until(lambda: os.path.isdir(mnt.p("both")), 10, what="both to become a directory")
    assert open(mnt.p("both/.data"), "rb").read() == b"parent-data"
    assert sorted(os.listdir(mnt.p("both"))) == [".data", "kid"]
    sh(f"echo new > {mnt.p('both/.data')}")
    assert zk.get(root + "/both")[0] == b"new\n"


def test_rm_rmdir_and_notempty(mnt, tree):
    zk, root = tree
    sh(f"mkdir -p {mnt.p('d/e')} && echo 1 > {mnt.p('d/e/f')}")
    r = sh(f"rmdir {mnt.p('d/e')}", check=False)
    assert r.returncode != 0 and "not empty" in r.stderr
    sh(f"rm {mnt.p('d/e/f')} && rmdir {mnt.p('d/e')}")
    assert zk.get_children(root + "/d") == []
    sh(f"mkdir -p {mnt.p('d/x/y')} && echo z > {mnt.p('d/x/y/z')} && rm -r {mnt.p('d')}")
    assert zk.exists(root + "/d") is None


def test_rename_is_one_atomic_replace(mnt, tree):
    zk, root = tree
    sh(f"echo old > {mnt.p('conf')}")
    seen = []
    zk.DataWatch(root + "/conf", lambda data, stat: seen.append(data))
    sh(f"echo new > {mnt.p('tmp')} && mv {mnt.p('tmp')} {mnt.p('conf')}")
    assert zk.get(root + "/conf")[0] == b"new\n"
    assert zk.exists(root + "/tmp") is None
    sh(f"sed -i s/new/sedded/ {mnt.p('conf')}")
    assert zk.get(root + "/conf")[0] == b"sedded\n"
    assert sorted(zk.get_children(root)) == ["conf"]
    wait_until(lambda: seen and seen[-1] == b"sedded\n", 5, what="watch")
    # Watchers saw whole values only: the old, the renamed-in, the sed result.
    assert all(v in (b"old\n", b"new\n", b"sedded\n", None) for v in seen), seen
    # A non-empty directory cannot move in one multi: EXDEV, and mv copies.
    sh(f"mkdir -p {mnt.p('src/sub')} && echo 1 > {mnt.p('src/sub/f')} && mv {mnt.p('src')} {mnt.p('dst')}")
    assert zk.get(root + "/dst/sub/f")[0] == b"1\n"
    assert zk.exists(root + "/src") is None


def test_cp_tar_rsync_find_grep(mnt, tree, tmp_path):
    zk, root = tree
    local = tmp_path / "src"
    (local / "etc/app").mkdir(parents=True)
    (local / "etc/app/db.conf").write_text("host=db1\n")
    (local / "etc/app/empty").write_text("")
    (local / "etc/top").write_text("top\n")
    sh(f"cp -r {local}/etc {mnt.p('cp')}")
    assert zk.get(root + "/cp/app/db.conf")[0] == b"host=db1\n"
    # An empty file (no write) is created at release, just after close.
    wait_until(lambda: zk.exists(root + "/cp/app/empty") is not None, 10, what="the empty file")
    assert zk.get(root + "/cp/app/empty")[0] == b""
    sh(f"tar -C {local} -cf - etc | tar -C {mnt.p()} -xf - && mv {mnt.p('etc')} {mnt.p('tarred')}")
    assert zk.get(root + "/tarred/top")[0] == b"top\n"
    sh(f"rsync -r {local}/etc/ {mnt.p('rs')}/")
    assert zk.get(root + "/rs/app/db.conf")[0] == b"host=db1\n"
    found = sh(f"cd {mnt.p()} && find . -type f | sort").stdout.split()
    assert "./rs/app/db.conf" in found and "./cp/top" in found
    hits = sh(f"grep -rl host=db1 {mnt.p()}").stdout.split()
    assert len(hits) == 3
    # And back out: the tree copies to local disk byte for byte.
    sh(f"cp -r {mnt.p('rs')} {tmp_path}/back && diff -r {local}/etc {tmp_path}/back")


def test_xattrs_show_stat_and_acl(mnt, tree):
    zk, root = tree
    zk.create(root + "/x", b"abc")
    zk.set(root + "/x", b"abcd")
    zst = zk.exists(root + "/x")
    get = lambda n: sh(f"getfattr --only-values -n user.zk.{n} {mnt.p('x')}").stdout
    assert get("version") == "1"
    assert get("czxid") == hex(zst.czxid)
    assert get("dataLength") == "4"
    assert "world:anyone:cdrwa" in get("acl")
    assert "mzxid=" + hex(zst.mzxid) in get("stat")
    # Only the user namespace exists: labels and POSIX ACLs are "not
    # supported" (ls -l then stops asking), a missing user name "no such".
    r = sh(f"getfattr -n system.posix_acl_access {mnt.p('x')}", check=False)
    assert r.returncode != 0 and "Operation not supported" in r.stderr
    r = sh(f"getfattr -n user.nothing {mnt.p('x')}", check=False)
    assert r.returncode != 0 and "No such attribute" in r.stderr
    session = get("session")
    assert session.startswith("0x") and int(session, 16) != 0
    sh(f"setfattr -n user.zk.acl -v 'world:anyone:r' {mnt.p('x')}")
    acl, _ = zk.get_acls(root + "/x")
    assert [(a.perms, a.id.scheme) for a in acl] == [(1, "world")]
    assert oct(os.stat(mnt.p("x")).st_mode & 0o777) == "0o444"
    r = sh(f"echo no > {mnt.p('x')}", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_conditional_write_on_version(mnt, tree):
    zk, root = tree
    zk.create(root + "/c", b"v0")
    zk.set(root + "/c", b"v1")  # version 1
    r = sh(f"echo lost > '{mnt.p('c@version=0')}'", check=False)
    assert r.returncode != 0
    assert zk.get(root + "/c")[0] == b"v1"
    sh(f"echo won > '{mnt.p('c@version=1')}'")
    data, st = zk.get(root + "/c")
    assert data == b"won\n" and st.version == 2


def test_create_modes_from_the_shell(mnt, tree):
    zk, root = tree
    sh(f"echo me > '{mnt.p('eph@ephemeral')}'")
    session = int(sh(f"getfattr --only-values -n user.zk.session {mnt.p()}").stdout, 16)
    assert zk.exists(root + "/eph").ephemeralOwner == session
    out = sh(f"zkfs_bin={mnt.proc.args[0]}; $zkfs_bin create '{mnt.p('job-@sequential')}' payload").stdout.strip()
    name = os.path.basename(out)
    assert name.startswith("job-") and len(name) == 14
    assert zk.get(root + "/" + name)[0] == b"payload"
    os.mkdir(mnt.p("box@container"))
    assert os.path.isdir(mnt.p("box"))
    sh(f"echo 1 > {mnt.p('box/item')} && rm {mnt.p('box/item')}")
    # The server reaps a container once its last child is gone.
    wait_until(lambda: zk.exists(root + "/box") is None, 90, what="container reaped")


def test_ttl_node_from_the_shell(mnt, tree):
    zk, root = tree
    sh(f"echo short > '{mnt.p('lease@ttl=300')}'")
    assert zk.get(root + "/lease")[0] == b"short\n"
    assert zk.exists(root + "/lease").ephemeralOwner == 0  # persistent, not ephemeral
    # The server removes it once it has gone unmodified for longer than the TTL.
    wait_until(lambda: zk.exists(root + "/lease") is None, 60, what="TTL node reaped")


def test_owner_and_umask_options(tree, zkfs_server):
    zk, root = tree
    zk.create(root + "/f", b"x")
    m = Mount(zkfs_server.hosts, root, opts="timeout=4000,uid=1234,gid=4321,umask=027")
    try:
        st = os.stat(m.p("f"))
        assert (st.st_uid, st.st_gid) == (1234, 4321)
        assert oct(st.st_mode & 0o777) == "0o640"
    finally:
        m.close()


def test_errors_map_to_errno(mnt, tree):
    zk, root = tree
    with pytest.raises(FileNotFoundError):
        open(mnt.p("missing"))
    sh(f"mkdir {mnt.p('d')} && echo 1 > {mnt.p('d/f')}")
    with pytest.raises(OSError) as e:
        os.rmdir(mnt.p("d"))
    assert e.value.errno == errno.ENOTEMPTY
    sh(f"echo x > '{mnt.p('e@ephemeral')}'")
    with pytest.raises(OSError) as e:
        os.mkdir(mnt.p("e/child"))
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        os.mkdir(mnt.p("d"))
    assert e.value.errno == errno.EEXIST


def test_freshness_after_other_clients_write(mnt, tree):
    zk, root = tree
    zk.create(root + "/fresh", b"one")
    assert open(mnt.p("fresh")).read() == "one"
    assert sorted(os.listdir(mnt.p())) == ["fresh"]
    for i in range(20):
        zk.set(root + "/fresh", b"value-%d" % i)
        # No sleep: the next read after the write is acknowledged sees it.
        assert open(mnt.p("fresh")).read() == "value-%d" % i
    zk.create(root + "/later", b"")
    assert "later" in os.listdir(mnt.p())
    zk.delete(root + "/later")
    assert "later" not in os.listdir(mnt.p())
