//! Hands freed memory back to the system from a thread of its own, so the
//! threads that serve requests do not pay for it.
//!
//! mimalloc (the allocator, see main.rs) gives memory that has stayed free
//! for its purge delay (1 s by default) back with `madvise`, and it does
//! that in whichever thread next allocates or frees after the delay: a
//! connection's, the core's, the storage thread. Such a purge unmaps
//! pages, shoots down the other CPU's TLB entries and, on a VM, hands the
//! pages to the host. A 3-member ensemble deleting 10 KiB znodes one at a
//! time frees 20 MB a second; on the build machine (2 vCPUs) each member's
//! core thread then ran 2.5-3.4 ms at a stretch about once a second
//! (`perf sched`), and the longest stretches in a profile were `madvise`
//! under the drop of a deleted node's data, while a delete takes ~0.4 ms
//! end to end (`scripts/bench.sh --ensemble --run "delete 1 1 10240"`).
//!
//! So zkd sets mimalloc's purge delay far above the interval of this
//! thread (`FOREGROUND_DELAY_MS`), and this thread forces a purge of what
//! is free every `EVERY`: memory goes back about as soon as before, from
//! here. Same run, 2 s of `perf sched`:
//! runs of zkd's serving threads over 1 ms went from 8 (longest 3.4 ms)
//! to 3 (longest 1.9 ms); this thread's longest was 2.4 ms. Three
//! alternated bench runs of that row, before -> after, medians: 1,899 ->
//! 2,003 ops/s (pairs +11%, -9%, +11%), p99 1,342 -> 1,290 us, p99.9
//! 3,471 -> 2,845 us; 16x32 creates 40.9k -> 42.8k ops/s (noise).
//! Setting `MIMALLOC_PURGE_DELAY` in the environment leaves mimalloc as
//! that says, and starts no thread.

use std::os::raw::{c_int, c_long};
use std::time::Duration;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v3 and v2). The
/// test below checks it against v3's default.
const PURGE_DELAY: c_int = 15;

/// mimalloc v3's default purge delay, in ms.
const MIMALLOC_DEFAULT_DELAY_MS: c_long = 1000;

/// The purge delay the serving threads see: memory this thread has not
/// purged after this long is purged by them, as before (this thread is
/// stuck or starved).
const FOREGROUND_DELAY_MS: c_long = 10_000;

/// How often this thread purges: mimalloc's own default delay.
const EVERY: Duration = Duration::from_millis(MIMALLOC_DEFAULT_DELAY_MS as u64);

extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_collect(force: bool);
}

/// Whether the environment chose mimalloc's purging.
fn chosen_by_environment() -> bool {
    std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
}

/// Moves purging to a thread named `zkd-purge`, unless the environment
/// sets `MIMALLOC_PURGE_DELAY`. Called once, as the server starts.
pub fn start() {
    if chosen_by_environment() {
        log::info!("MIMALLOC_PURGE_DELAY is set: freed memory is purged as it says");
        return;
    }
    // SAFETY: sets one of mimalloc's options; any value is valid.
    unsafe { mi_option_set(PURGE_DELAY, FOREGROUND_DELAY_MS) };
    let started = std::thread::Builder::new()
        .name("zkd-purge".into())
        .spawn(|| loop {
            std::thread::sleep(EVERY);
            // SAFETY: walks this thread's heap and purges the arenas'
            // free memory; mimalloc lets one thread purge at a time.
            unsafe { mi_collect(true) };
        });
    if let Err(e) = started {
        // SAFETY: as above.
        unsafe { mi_option_set(PURGE_DELAY, MIMALLOC_DEFAULT_DELAY_MS) };
        log::warn!("freed memory is purged by the serving threads: cannot start a thread: {e}");
    }
}

/// Hands memory freed after loading a tree back to the system at once.
/// Loading stages every node in one vector before building the ordered map
/// (full B-tree leaves); mimalloc purges freed memory only as later
/// allocations pass by, so an idle server kept that vector's ~110 MB (per
/// million znodes) resident. The forced collect also frees the pages the
/// loading thread's own heap still holds, which `zkd-purge`'s collect (of
/// its own heap) does not. RocksDB's buffers from the scan go back via
/// glibc.
pub fn release_freed_memory() {
    // SAFETY: both only walk their allocator's own free lists.
    unsafe {
        mi_collect(true);
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// The purge delay mimalloc uses now, in ms.
    fn purge_delay_ms() -> c_long {
        // SAFETY: reads one of mimalloc's options.
        unsafe { mi_option_get(PURGE_DELAY) }
    }

    /// The option index is mimalloc's purge delay: before `start` it reads
    /// mimalloc's default, after it the delay `start` set. A mimalloc whose
    /// options are numbered otherwise fails here, not in production.
    #[test]
    fn start_sets_mimallocs_purge_delay() {
        if chosen_by_environment() {
            return;
        }
        // Another test of this process may have started a server.
        let before = purge_delay_ms();
        assert!(
            before == MIMALLOC_DEFAULT_DELAY_MS || before == FOREGROUND_DELAY_MS,
            "option {PURGE_DELAY} reads {before}"
        );
        start();
        assert_eq!(purge_delay_ms(), FOREGROUND_DELAY_MS);
    }
}
