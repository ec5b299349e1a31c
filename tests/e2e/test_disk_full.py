"""A full disk: writes are refused with NotReadOnly while the data
directory's filesystem is below dataDirFreeBytesMin, reads keep working,
nothing acknowledged is lost, and writes resume once space is freed. The
data directory is on a small tmpfs mounted for the test."""
import os
import subprocess
import time
import uuid

import pytest
from kazoo.exceptions import NotReadOnlyCallError

import rawzk
from conftest import Zkd, client, four_letter, wait_until

MIN_FREE = 32 << 20


@pytest.fixture
def small_disk(tmpdir_path):
    mnt = os.path.join(tmpdir_path, "disk")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", mnt])


def fill(path, leave_free):
    """Writes a file that leaves about `leave_free` bytes free."""
    st = os.statvfs(os.path.dirname(path))
    size = st.f_bavail * st.f_frsize - leave_free
    with open(path, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        while size > 0:
            f.write(chunk[: min(len(chunk), size)])
            size -= len(chunk)


def test_full_disk_refuses_writes_keeps_reads_and_recovers(tmpdir_path, small_disk):
    s = Zkd(tmpdir_path, extra_cfg=f"dataDirFreeBytesMin={MIN_FREE}\n")
    s.data = os.path.join(small_disk, "data")
    s.write_cfg()
    s.start()
    try:
        zk = client(s.hosts)
        acked = []
        for i in range(50):
            p = f"/before-{i}"
            zk.create(p, b"x" * 1000)
            acked.append(p)
        filler = os.path.join(small_disk, "filler")
        fill(filler, MIN_FREE // 2)
        wait_until(lambda: four_letter(s.port, "isro") == "ro", 10, what="zkd to notice the full disk")
        with pytest.raises(NotReadOnlyCallError):
            zk.create("/during", b"y")
        with pytest.raises(NotReadOnlyCallError):
            zk.set(acked[0], b"changed")
        # Reads, and new sessions to read with, keep working.
        assert zk.get(acked[0])[0] == b"x" * 1000
        reader = client(s.hosts)
        assert len(reader.get_children("/")) >= 50
        reader.stop()
        os.remove(filler)
        wait_until(lambda: four_letter(s.port, "isro") == "rw", 10, what="zkd to accept writes again")
        zk.create("/after", b"z")
        zk.stop()
        # Nothing acknowledged was damaged, across a restart too.
        s.kill9()
        s.start()
        zk = client(s.hosts)
        for p in acked:
            assert zk.get(p)[0] == b"x" * 1000
        assert zk.get("/after")[0] == b"z"
        assert zk.exists("/during") is None
        zk.stop()
        assert "less than dataDirFreeBytesMin: refusing writes" in s.logtext()
    finally:
        s.stop()
