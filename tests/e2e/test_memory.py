"""How a running zkd uses memory (see zkd(8), MEMORY AND PAGE CACHE):
transparent huge pages are off for its process, the checkpoint files
RocksDB writes do not stay in the page cache, and freed memory goes back to
the system from a thread of its own."""
import glob
import os
import subprocess

from conftest import Zkd, client, flush_a_blob_file, rss_kib, wait_until


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


def threads_of(pid):
    return {open(c).read().strip() for c in glob.glob(f"/proc/{pid}/task/*/comm")}


def test_a_running_zkd_refuses_transparent_huge_pages(zkd):
    with open(f"/proc/{zkd.proc.pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    assert status["THP_enabled"].strip() == "0"


def test_checkpoint_files_leave_the_page_cache_once_written(zkd):
    assert "zkd-pagecache" in threads_of(zkd.proc.pid)
    zk = client(zkd.hosts)
    try:
        checkpoint = flush_a_blob_file(zk, zkd.data)
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


def test_freed_memory_goes_back_within_seconds_from_zkd_purge(zkd):
    pid = zkd.proc.pid
    assert "zkd-purge" in threads_of(pid)
    zk = client(zkd.hosts)
    try:
        # 8,000 znodes of 10 KiB: 80 MB of node data in zkd's heap, in
        # pieces small enough to come from the allocator's arenas (which
        # purge), not from mappings of their own (which are unmapped at
        # once when freed).
        zk.create("/mem")
        data = os.urandom(10 << 10)
        paths = [f"/mem/n{i}" for i in range(8000)]
        for i in range(0, len(paths), 1000):
            for r in [zk.create_async(p, data) for p in paths[i:i + 1000]]:
                r.get(timeout=30)
        full = rss_kib(pid)
        for i in range(0, len(paths), 1000):
            for r in [zk.delete_async(p) for p in paths[i:i + 1000]]:
                r.get(timeout=30)
        # zkd sets the allocator's own purge delay to 10 s: memory back
        # within 8 s was given back by the zkd-purge thread (each second).
        wait_until(lambda: rss_kib(pid) < full - 40_000, 8,
                   what=f"zkd's RSS to fall 40 MB below {full} KiB")
    finally:
        zk.stop()
        zk.close()


def test_mimalloc_purge_delay_in_the_environment_means_no_purge_thread(tmpdir_path, monkeypatch):
    monkeypatch.setenv("MIMALLOC_PURGE_DELAY", "1000")
    s = Zkd(tmpdir_path).start()
    try:
        threads = threads_of(s.proc.pid)
        assert "zkd-pagecache" in threads and "zkd-purge" not in threads
    finally:
        s.stop()
