//! zkd: a ZooKeeper-compatible coordination daemon.
//!
//! Map of the crate:
//! - `config`  — zoo.cfg and myid, as Apache ZooKeeper reads them.
//! - `txnlog`  — the transaction log: preallocated files, one fdatasync per
//!   group; what makes a write durable.
//! - `storage` — the tree's checkpoint in RocksDB (written without its WAL),
//!   redone from the log at start-up; ZAB's epochs; the rules between them.
//! - `disk`    — free space checks and the fail-stop exit.
//! - `runtime` — the task that owns the pure core (`zkd_core`), the storage
//!   thread, and the durability gate between them and clients.
//! - `ensemble` — ensemble mode: ZAB's runtime side (peer transport, the
//!   driver that carries out the pure peer's outputs).
//! - `net`     — the client port: frames in, frames out, four-letter words.
//! - `frames`  — a connection's frame reader (no buffer while idle).
//! - `outbox`  — a connection's outgoing queue and its byte limit.
//! - `fourlw`  — the four-letter-word answers.
//! - `cli`     — `zkd serve`, `zkd status`, `--help`.

mod cli;
mod config;
mod disk;
mod ensemble;
mod fourlw;
mod frames;
mod metrics;
mod migrate;
mod net;
mod outbox;
mod runtime;
mod storage;
mod tls;
mod txnlog;

/// mimalloc rather than glibc malloc: per-request buffers, tree nodes and
/// events are small, short-lived allocations from several threads, where
/// glibc spent ~20% of a loaded ensemble's CPU (perf) and kept more memory
/// per znode (no per-chunk header, less fragmentation after a load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands memory freed after loading a tree back to the system. Loading
/// stages every node in one vector before building the ordered map (full
/// B-tree leaves); mimalloc purges freed memory only as later allocations
/// pass by, so an idle server kept that vector's ~110 MB (per million
/// znodes) resident. RocksDB's buffers from the scan go back via glibc.
pub fn release_freed_memory() {
    extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: both only walk their allocator's own free lists.
    unsafe {
        mi_collect(true);
        libc::malloc_trim(0);
    }
}

fn main() {
    std::process::exit(cli::main(std::env::args().skip(1).collect()));
}
