//! zkd: a ZooKeeper-compatible coordination daemon.
//!
//! Map of the crate:
//! - `config`  — zoo.cfg and myid, as Apache ZooKeeper reads them.
//! - `txnlog`  — the transaction log: preallocated files, one fdatasync per
//!   group; what makes a write durable.
//! - `storage` — the tree's checkpoint in RocksDB (written without its WAL),
//!   redone from the log at start-up; ZAB's epochs; the rules between them.
//! - `staged`  — the checkpoint's records waiting for their write to RocksDB
//!   (each node's last one only).
//! - `valueref` — big node data left in the log that made it durable, the
//!   checkpoint's record referring to it there.
//! - `blobgc`  — when the checkpoint's blob files are garbage-collected.
//! - `rocksdb_crc` — RocksDB's checksum on the CPU's crc32 instruction in
//!   place of the shared library's table-driven one.
//! - `disk`    — free space checks and the fail-stop exit.
//! - `pagecache` — keeps the checkpoint's files out of the page cache.
//! - `trash`   — frees deleted files a piece at a time (the disk's discards
//!   spread out, not ahead of the log's syncs).
//! - `purge`   — hands freed memory back to the system: from a thread of its
//!   own, not from the threads that serve requests, and at once after a load.
//! - `runtime` — the task that owns the pure core (`zkd_core`), the storage
//!   thread, and the durability gate between them and clients.
//! - `awake`   — a helper that keeps the storage thread's CPU from idling
//!   while it waits for its log sync (`syncIdleSpin`).
//! - `jobq`    — how the storage thread waits for its next job (a short look,
//!   then a futex sleep; neither may leave it yielded behind a busy loop).
//! - `evlook`  — the event loop's look (opt-in): the worker polls its
//!   sockets a while after the core's last step before it sleeps.
//! - `ensemble` — ensemble mode: ZAB's runtime side (peer transport, the
//!   driver that carries out the pure peer's outputs).
//! - `net`     — the client port: frames in, frames out, four-letter words.
//! - `frames`  — a connection's frame reader (no buffer while idle).
//! - `sendq`   — a socket's send queue that other threads may send on
//!   directly while its writer is idle (clients' and peers' alike).
//! - `outbox`  — a client connection's outgoing queue and its limits.
//! - `fourlw`  — the four-letter-word answers.
//! - `sched`   — the CPU time slice zkd's threads ask the scheduler for.
//! - `cli`     — `zkd serve`, `zkd status`, `--help`.

mod awake;
mod blobgc;
mod cli;
mod config;
mod disk;
mod ensemble;
mod evlook;
mod fourlw;
mod frames;
mod jobq;
mod metrics;
mod migrate;
mod net;
mod outbox;
mod pagecache;
mod purge;
mod rocksdb_crc;
mod runtime;
mod sched;
mod sendq;
mod staged;
mod storage;
mod tls;
mod trash;

mod txnlog;
mod valueref;

/// mimalloc rather than glibc malloc: per-request buffers, tree nodes and
/// events are small, short-lived allocations from several threads, where
/// glibc spent ~20% of a loaded ensemble's CPU (perf) and kept more memory
/// per znode (no per-chunk header, less fragmentation after a load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (all its threads and
/// mappings, whatever they `madvise`). mimalloc asks for huge pages on its
/// arenas, and a growing tree then takes each 2 MiB page in one fault that
/// zeroes it on the thread that allocated: a connection's or the core's,
/// with requests waiting. On the build machine (a VM whose host backs guest
/// memory on first touch) such a fault took 8-20 ms, and 52-66% of zkd's
/// CPU samples under 16x32 10 KiB creates were the kernel clearing huge
/// pages. Fresh standalone servers, allowed -> refused
/// (`MIMALLOC_ALLOW_THP=0`), 3 rounds (creates after a 1x1 create run, the
/// others alone):
///   create 16x32 10 KiB  9.7-10.5k -> 19.9-24.6k ops/s, p99 208-222 -> 53-141 ms
///   multi10 16x32 10 KiB 1.5-2.0k  -> 2.3-2.6k ops/s, p99 1.6-1.8 s -> 0.3-0.8 s
///   set 16x32 10 KiB     27.7-30.9k -> 29.6-30.7k ops/s
/// After a large create run, setData and multi10 then fell to a third,
/// through page cache growth: `pagecache` is what makes this pay.
/// Databases that care about tail latency advise the same (Redis, MongoDB).
pub fn refuse_huge_pages() {
    // SAFETY: a flag on this process's memory map; no memory is touched.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        log::info!(
            "transparent huge pages stay as the system sets them: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn main() {
    std::process::exit(cli::main(std::env::args().skip(1).collect()));
}
