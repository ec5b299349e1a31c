//! Keeps the storage thread's CPU from going idle while the thread waits
//! for its log write and fdatasync (`syncIdleSpin`).
//!
//! Why: a lone client's write waits for two device round trips (the write,
//! then the cache flush), and the storage thread sleeps through each. On a
//! VM whose idle vCPUs halt at once (cpuidle `haltpoll` with
//! `guest_halt_poll_ns` 0, as on the 2-core Firecracker test machine), the
//! CPU halts, and every completion then has to wake it: the interrupt to a
//! halted vCPU, and the block layer's flush worker (kblockd) queued on it.
//! Measured there (`/tmp/exp/ur`, 4 KiB O_DIRECT pwrite + fdatasync into a
//! preallocated file, 20,000 each, on the CPU that takes the disk's
//! interrupts): 103-107 µs per write alone, 68-79 µs with a SCHED_IDLE
//! busy loop on the same CPU.
//!
//! How: a helper thread at the lowest priority (SCHED_IDLE) spins on
//! the storage thread's CPU from the start of a sync to its end, and parks
//! otherwise. It is moved to whichever CPU the storage thread is on when a
//! sync starts. It yields every round: SCHED_IDLE makes a thread woken on
//! its CPU preempt it, but it does not keep the scheduler from choosing
//! the helper over a thread already runnable there (a trace showed
//! kblockd's flush worker, queued by the sync itself, waiting 3.4 ms for
//! the tick behind a helper that did not yield; p99.9 of lone writes went
//! from ~1 ms to 4.2 ms). And it parks as soon as it sees the sync over,
//! so it is not runnable while the storage thread looks for its next job
//! (that look yields too; see `jobq`).
//!
//! What it gave on that machine, standalone (`zkbench` 1x1, 3 s runs,
//! alternating, 2 each): setData and delete 5,555-5,860 -> 6,095-6,292
//! ops/s, p50 163-168 -> 150-154 µs; the server's CPU time per write
//! 91-106 -> 153-160 µs. Only small groups are synced under it (see
//! `storage::AWAKE_GROUP_MAX`), and only on a standalone server by
//! default (see `Config::sync_idle_spin`).
//!
//! It does not start where Linux refuses SCHED_IDLE (then it would compete
//! with real work), and costs nothing when off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

struct Shared {
    /// A sync is in progress: spin.
    on: AtomicBool,
    /// The helper is to exit.
    stop: AtomicBool,
    /// Rounds of spinning so far (what the test watches).
    rounds: AtomicU64,
}

/// The helper, owned by the storage thread.
pub struct Awake {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    handle: Option<JoinHandle<()>>,
    /// The helper's thread id (for its CPU affinity).
    tid: i32,
    /// The CPU the helper is bound to, or -1.
    cpu: i32,
}

impl Awake {
    /// Starts the helper; `None` if it cannot run at idle priority.
    pub fn start() -> Option<Awake> {
        let shared = Arc::new(Shared {
            on: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            rounds: AtomicU64::new(0),
        });
        // The helper's thread id, or why it cannot run at idle priority.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<i32, String>>();
        let handle = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("zkd-awake".into())
                .spawn(move || {
                    // SAFETY: gettid has no arguments.
                    let tid = unsafe { libc::gettid() };
                    let idle = crate::sched::set_idle().map(|()| tid);
                    let ok = idle.is_ok();
                    let _ = ready_tx.send(idle.map_err(|e| e.to_string()));
                    if ok {
                        spin_while_syncing(&shared);
                    }
                })
                .ok()?
        };
        let tid = match ready_rx.recv() {
            Ok(Ok(tid)) => tid,
            refused => {
                let why = match refused {
                    Ok(Err(e)) => e,
                    _ => "the helper thread ended".to_string(),
                };
                log::info!("event=sync_idle_spin_off reason=\"SCHED_IDLE refused: {why}\"");
                let _ = handle.join();
                return None;
            }
        };
        Some(Awake {
            shared,
            handle: Some(handle),
            tid,
            cpu: -1,
        })
    }

    fn unpark(&self) {
        if let Some(h) = &self.handle {
            h.thread().unpark();
        }
    }

    /// Runs `sync` with the helper spinning on this thread's CPU.
    pub fn during<T>(&mut self, sync: impl FnOnce() -> T) -> T {
        // SAFETY: sched_getcpu has no arguments; -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu >= 0 && cpu != self.cpu {
            self.cpu = cpu;
            // SAFETY: a zeroed cpu_set_t with one bit set, for our own thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu as usize, &mut set);
                // On failure (the CPU went offline) it spins wherever it is.
                libc::sched_setaffinity(self.tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
        self.shared.on.store(true, Ordering::SeqCst);
        self.unpark();
        let out = sync();
        self.shared.on.store(false, Ordering::SeqCst);
        out
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.unpark();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn spin_while_syncing(shared: &Shared) {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if !shared.on.load(Ordering::SeqCst) {
            // A stray unpark only costs one more round.
            std::thread::park();
            continue;
        }
        while shared.on.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            shared.rounds.fetch_add(1, Ordering::Relaxed);
            // Idle priority does not keep the scheduler from choosing this
            // thread over one woken on this CPU (kblockd's flush worker
            // waited 3.4 ms, a tick, behind it in a trace): only a woken
            // thread's preemption is certain. A yield hands over the CPU
            // to anything else runnable.
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The helper spins while a sync runs and stops when it ends; dropping
    /// it ends its thread. (How much CPU it gets depends on what else
    /// runs: at idle priority, under a parallel test run, maybe little.)
    #[test]
    fn the_helper_spins_during_a_sync_only() {
        let Some(mut awake) = Awake::start() else {
            eprintln!("SCHED_IDLE refused here; nothing to test");
            return;
        };
        let rounds = |a: &Awake| a.shared.rounds.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(rounds(&awake), 0, "spun before any sync");
        let shared = awake.shared.clone();
        // Sleeping stands for the storage thread waiting on the disk.
        let seen = awake.during(|| {
            let start = Instant::now();
            while shared.rounds.load(Ordering::SeqCst) == 0
                && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            shared.rounds.load(Ordering::SeqCst)
        });
        assert!(seen > 0, "the helper never spun during a sync");
        std::thread::sleep(Duration::from_millis(100));
        let after = rounds(&awake);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            rounds(&awake),
            after,
            "the helper kept spinning after the sync"
        );
        let tid = awake.tid;
        drop(awake);
        assert!(!std::path::Path::new(&format!("/proc/self/task/{tid}")).exists());
    }
}
