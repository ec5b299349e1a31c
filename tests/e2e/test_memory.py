"""How a running zkd uses memory (see zkd(8), MEMORY AND PAGE CACHE):
transparent huge pages are off for its process, and the checkpoint files
RocksDB writes do not stay in the page cache."""
import glob
import os
import subprocess

from conftest import client, wait_until


def resident_bytes(paths):
    """Bytes of `paths` in the page cache, as fincore(1) counts them."""
    if not paths:
        return 0
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", *paths],
        capture_output=True, text=True, check=False,
    ).stdout
    # A file RocksDB removed meanwhile is reported on stderr and skipped.
    return sum(int(line) for line in out.split())


def test_a_running_zkd_refuses_transparent_huge_pages(zkd):
    with open(f"/proc/{zkd.proc.pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    assert status["THP_enabled"].strip() == "0"


def test_checkpoint_files_leave_the_page_cache_once_written(zkd):
    threads = {open(c).read().strip() for c in glob.glob(f"/proc/{zkd.proc.pid}/task/*/comm")}
    assert "zkd-pagecache" in threads
    db = os.path.join(zkd.data, "zkd.db")
    zk = client(zkd.hosts)
    try:
        # 100 MB of incompressible data fills a 64 MB memtable, so RocksDB
        # flushes it: the big values go to a blob file, the keys to an SST.
        # (Values just under jute.maxbuffer, 1 MiB with the header.)
        zk.create("/big")
        for i in range(100):
            zk.create(f"/big/n{i}", os.urandom(1000 << 10))
        checkpoint = lambda: glob.glob(f"{db}/*.sst") + glob.glob(f"{db}/*.blob")
        wait_until(lambda: any(p.endswith(".blob") for p in checkpoint()), 60,
                   what="RocksDB to flush a blob file")
        # What the flush wrote is dropped from the cache once it is clean;
        # a control file next to it, which zkd does not look after, stays.
        control = os.path.join(zkd.dir, "control")
        with open(control, "wb") as f:
            f.write(os.urandom(4 << 20))
            f.flush()
            os.fsync(f.fileno())
        wait_until(lambda: resident_bytes(checkpoint()) == 0, 30,
                   what="the checkpoint files to leave the page cache")
        assert resident_bytes([control]) == 4 << 20
        assert len(zk.get("/big/n99")[0]) == 1000 << 10
    finally:
        zk.stop()
        zk.close()
