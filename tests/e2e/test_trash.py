"""Deleted files are freed a piece at a time by a thread of zkd's own
(see zkd(8), FILES, zkd.trash): every checkpoint file RocksDB writes gets
a second name in dataDir/zkd.trash, and a file left there with no other
name is shortened step by step, then removed."""
import os
import time

from conftest import Zkd, client, flush_a_blob_file, four_letter, wait_until
from test_memory import threads_of


def test_checkpoint_files_get_a_second_name_in_the_trash(zkd):
    assert "zkd-trash" in threads_of(zkd.proc.pid)
    trash = os.path.join(zkd.data, "zkd.trash")
    zk = client(zkd.hosts)
    try:
        checkpoint = flush_a_blob_file(zk, zkd.data)

        def all_linked():
            inodes = {os.stat(os.path.join(trash, n)).st_ino for n in os.listdir(trash)}
            files = checkpoint()
            return files and all(
                os.stat(p).st_nlink == 2 and os.stat(p).st_ino in inodes for p in files)

        wait_until(all_linked, 10, what="every checkpoint file linked into zkd.trash")
        for n in os.listdir(trash):
            ino, name = n.split("-", 1)
            assert name.endswith((".sst", ".blob")), n
            assert int(ino) == os.stat(os.path.join(trash, n)).st_ino, n
        assert len(zk.get("/big/n99")[0]) == 1000 << 10
    finally:
        zk.stop()
        zk.close()


def test_a_deleted_file_left_in_the_trash_is_freed_gradually(tmpdir_path):
    """What a crash leaves: a deleted file (one name) is shortened in steps
    and removed after the next start; a file with another name is kept."""
    s = Zkd(tmpdir_path)
    trash = os.path.join(s.data, "zkd.trash")
    os.makedirs(trash)
    # Sparse: 256 MiB to free costs the disk nothing, and at the slowest
    # rate (100 MiB/s, 1 MiB steps) takes about 3 s.
    deleted = os.path.join(trash, "1-000007.blob")
    with open(deleted, "wb") as f:
        f.truncate(256 << 20)
    kept_elsewhere = os.path.join(tmpdir_path, "still-used.sst")
    with open(kept_elsewhere, "wb") as f:
        f.write(b"live")
    linked = os.path.join(trash, "2-000008.sst")
    os.link(kept_elsewhere, linked)
    # Watched from before the server is up, so no step can be missed.
    s.start(wait=False)
    try:
        sizes = set()
        deadline = time.monotonic() + 60
        while os.path.exists(deleted):
            assert time.monotonic() < deadline, "the deleted file was not freed in 60 s"
            try:
                sizes.add(os.stat(deleted).st_size)
            except FileNotFoundError:
                break
            time.sleep(0.01)
        between = [n for n in sizes if 0 < n < 256 << 20]
        assert between, f"freed whole, not in steps: sizes seen {sorted(sizes)}"
        assert all(n % (1 << 20) == 0 for n in between), sorted(sizes)
        wait_until(lambda: four_letter(s.port, "ruok", 1) == "imok", 20, what="zkd to answer ruok")
        assert open(linked, "rb").read() == b"live"
        assert os.stat(kept_elsewhere).st_nlink == 2
    finally:
        s.stop()
