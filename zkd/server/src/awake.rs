//! Keeps the storage thread's CPU, and the CPU the write came from, from
//! going idle while the storage thread waits for its log write and
//! fdatasync (`syncIdleSpin`).
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
//! For a lone write (a group of one record), a second helper spins from
//! the start of the sync, for at most `FAR_SPIN_MAX`, on the CPU the core
//! thread handed the write from (`note_requester`, standalone only), when
//! that is another CPU.
//! The reply leaves from the storage thread and wakes the client, which
//! sleeps where the core thread was woken for its request: there, as a
//! rule (the scheduler wakes a thread near its waker). Left idle, that CPU
//! halts, and the wake-up pays for bringing it back (~27 µs of a ~160 µs
//! lone write in a trace on the 2-core VM). Measured there, standalone,
//! fresh server per run, 4 s runs alternating, medians of ops/s without
//! -> with it: setData 1x1 5,708 -> 6,264 and delete 1x1 5,576 -> 6,526
//! (6 each, p99 no worse); 3 each: create 1x1 10 KiB 4,433/4,525/4,855
//! -> 4,995/4,853/4,694, delete 1x1 10 KiB 5,764/5,625/5,969 ->
//! 6,401/6,693/6,701, setData 4x1 15,660/15,564/15,044 ->
//! 16,076/15,582/16,222; setData 16x32 within noise (2 each). The
//! server's CPU time per lone write went from ~170 to ~220-260 µs.
//!
//! Re-measured later on the same kind of VM, which by then reported steal
//! time (`/proc/stat`) under lone writes: standalone,
//! fresh server per run, 3 s runs, 3 alternations, ops/s with / without
//! (`syncIdleSpin=false`): setData 1x1 3,878/3,453/3,996 ->
//! 4,112/4,404/4,162, delete 1x1 3,801/3,956/4,151 -> 4,317/4,101/3,813,
//! create 1x1 10 KiB 2,035/2,275/2,253 -> 2,136/2,514/1,945; steal per run
//! 19-40 ticks with it, 1-22 without; p99.9 11-15 ms with it, 6-14 ms
//! without (the VM itself was paused ~10 ms every ~100 ms). Not
//! enough to change the default, but the gain above depends on the host.
//!
//! It does not start where Linux refuses SCHED_IDLE (then it would compete
//! with real work), and costs nothing when off.
//!
//! Tried and not kept: a helper spinning for 100 µs after each reply on
//! the CPU the reply left from, for lone reads. On the 3-member loopback
//! ensemble (one worker thread per member; in a trace, the client's
//! thread on the other CPU), ops/s without / with, fresh ensembles, 4 s
//! runs: getData 1x1 16,401, 15,037, 17,221 / 19,969, 18,287, 19,326;
//! getChildren 1x1 10 KiB 15,890, 15,718, 16,887 / 18,726, 18,251,
//! 17,960; but exists 1x1 10 KiB 17,732, 16,903 / 17,118, 18,660 and the
//! 1x1 read/write mix 25,068, 25,762 / 19,665, 18,888. Standalone,
//! getData 1x1 33,313, 34,996 / 9,104, 14,752: a lone read's ~9 µs round
//! trip there is a worker and its client taking turns on one CPU (a
//! trace), which the scheduler stopped arranging with the helper
//! runnable there.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Shared {
    /// A sync is in progress: spin.
    on: AtomicBool,
    /// The helper is to exit.
    stop: AtomicBool,
    /// Rounds of spinning so far (what the test watches).
    rounds: AtomicU64,
    /// Syncs begun (each `on`), so a helper that gave up on one sync
    /// spins again for the next.
    syncs: AtomicU64,
    /// How long it spins at most per sync (`None`: to the end).
    limit: Option<Duration>,
}

/// How long the far helper spins at most per sync: a lone write's sync
/// takes ~100-250 µs on the 2-core VM, and the reply follows it. Without
/// a bound, 1x1 runs of 4 s had a p99 of 3.5-5.4 ms now and then (2 of
/// 12 in one series, 1 of 10 in another, that one at 3,089 ops/s with the
/// server's CPU time per write doubled: syncs that stalled for
/// milliseconds with both helpers spinning throughout; the cause was not
/// found). A stalled sync's reply misses the warm CPU; nothing else does.
const FAR_SPIN_MAX: Duration = Duration::from_micros(300);

/// The CPU the core thread last handed the storage thread a write from
/// (`note_requester`), or -1. One per process: servers sharing a process
/// (tests) share it, which only steers where a helper spins.
static REQUESTER_CPU: AtomicI32 = AtomicI32::new(-1);

/// Called by the thread that hands the storage thread a write: the CPU
/// it runs on is where the reply's client most likely sleeps.
pub fn note_requester() {
    // SAFETY: sched_getcpu has no arguments; -1 on failure.
    let cpu = unsafe { libc::sched_getcpu() };
    REQUESTER_CPU.store(cpu, Ordering::Relaxed);
}

/// The helpers, owned by the storage thread.
pub struct Awake {
    /// On the storage thread's CPU.
    near: Helper,
    /// On the requester's CPU when that is another one; `None` on a
    /// machine with one CPU.
    far: Option<Helper>,
}

impl Awake {
    /// Starts the helpers; `None` if they cannot run at idle priority.
    pub fn start() -> Option<Awake> {
        let near = match Helper::start(None) {
            Ok(h) => h,
            Err(why) => {
                log::info!("event=sync_idle_spin_off reason=\"SCHED_IDLE refused: {why}\"");
                return None;
            }
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let far = if cpus > 1 {
            Helper::start(Some(FAR_SPIN_MAX)).ok()
        } else {
            None
        };
        Some(Awake { near, far })
    }

    /// Runs `sync` with a helper spinning on this thread's CPU, and, for a
    /// `lone` write, one on the requester's (`note_requester`) if that is
    /// another. Only for a lone one: with a few clients writing at once
    /// (4x1 setData) the second helper cost 7% (2 alternations), the
    /// other clients keeping that CPU awake already.
    pub fn during<T>(&mut self, lone: bool, sync: impl FnOnce() -> T) -> T {
        // SAFETY: sched_getcpu has no arguments; -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        let requester = REQUESTER_CPU.load(Ordering::Relaxed);
        if let Some(f) = self.far.as_mut() {
            if lone && requester >= 0 && requester != cpu {
                f.bind(requester);
                f.on();
            }
        }
        self.near.bind(cpu);
        self.near.on();
        let out = sync();
        self.near.off();
        if let Some(f) = &self.far {
            f.off();
        }
        out
    }
}

/// One spinning thread.
struct Helper {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    handle: Option<JoinHandle<()>>,
    /// The helper's thread id (for its CPU affinity).
    tid: i32,
    /// The CPU the helper is bound to, or -1.
    cpu: i32,
}

impl Helper {
    /// Starts the helper, or says why it cannot run at idle priority.
    fn start(limit: Option<Duration>) -> Result<Helper, String> {
        let shared = Arc::new(Shared {
            on: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            rounds: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            limit,
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
                .map_err(|e| e.to_string())?
        };
        let tid = match ready_rx.recv() {
            Ok(Ok(tid)) => tid,
            refused => {
                let _ = handle.join();
                return Err(match refused {
                    Ok(Err(e)) => e,
                    _ => "the helper thread ended".to_string(),
                });
            }
        };
        Ok(Helper {
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

    /// Binds the helper to `cpu` (if known, and not already).
    fn bind(&mut self, cpu: i32) {
        if cpu >= 0 && cpu != self.cpu {
            self.cpu = cpu;
            // On failure (the CPU went offline) it spins wherever it is.
            pin(self.tid, cpu as usize);
        }
    }

    fn on(&self) {
        self.shared.syncs.fetch_add(1, Ordering::SeqCst);
        self.shared.on.store(true, Ordering::SeqCst);
        self.unpark();
    }

    fn off(&self) {
        self.shared.on.store(false, Ordering::SeqCst);
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.unpark();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Binds thread `tid` (0: the calling one) to `cpu`; false if refused.
fn pin(tid: i32, cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t with one bit set, for a thread of ours.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn spin_while_syncing(shared: &Shared) {
    // The sync whose time (`Shared::limit`) ran out.
    let mut spent = None;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let sync = shared.syncs.load(Ordering::SeqCst);
        if !shared.on.load(Ordering::SeqCst) || spent == Some(sync) {
            // A stray unpark only costs one more round.
            std::thread::park();
            continue;
        }
        let start = Instant::now();
        while shared.on.load(Ordering::Relaxed)
            && !shared.stop.load(Ordering::Relaxed)
            && shared.syncs.load(Ordering::Relaxed) == sync
        {
            if shared.limit.is_some_and(|l| start.elapsed() > l) {
                spent = Some(sync);
                break;
            }
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

    /// The helper spins while a sync runs and stops when it ends; dropping
    /// it ends its thread. (How much CPU it gets depends on what else
    /// runs: at idle priority, under a parallel test run, maybe little.)
    #[test]
    fn the_helper_spins_during_a_sync_only() {
        let Some(mut awake) = Awake::start() else {
            eprintln!("SCHED_IDLE refused here; nothing to test");
            return;
        };
        let rounds = |a: &Awake| a.near.shared.rounds.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(rounds(&awake), 0, "spun before any sync");
        let shared = awake.near.shared.clone();
        // Sleeping stands for the storage thread waiting on the disk.
        let seen = awake.during(true, || {
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
        let tids: Vec<i32> = [Some(&awake.near), awake.far.as_ref()]
            .into_iter()
            .flatten()
            .map(|h| h.tid)
            .collect();
        drop(awake);
        for tid in tids {
            assert!(!std::path::Path::new(&format!("/proc/self/task/{tid}")).exists());
        }
    }

    /// The CPUs thread `tid` (0: this one) may run on.
    fn cpus_of(tid: i32) -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t filled in for a thread of ours.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    fn pin_to(cpu: usize) {
        assert!(pin(0, cpu), "cannot pin the test thread to CPU {cpu}");
    }

    /// The second helper spins on the CPU a lone write came from while the
    /// sync runs on another; not when both are the same CPU, nor for a
    /// group, nor past its limit.
    #[test]
    fn the_far_helper_spins_on_the_requesters_cpu_during_a_sync() {
        let cpus = cpus_of(0);
        if cpus.len() < 2 {
            eprintln!("one CPU here; nothing to test");
            return;
        }
        let (requester, syncer) = (cpus[0], cpus[1]);
        let Some(mut awake) = Awake::start() else {
            eprintln!("SCHED_IDLE refused here; nothing to test");
            return;
        };
        let far = awake.far.as_ref().expect("a second helper on 2+ CPUs");
        let (shared, tid) = (far.shared.clone(), far.tid);
        // The core hands the write over from one CPU...
        pin_to(requester);
        note_requester();
        // ...and the storage thread syncs it on another.
        pin_to(syncer);
        let (seen, bound) = awake.during(true, || {
            let start = Instant::now();
            while shared.rounds.load(Ordering::SeqCst) == 0
                && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            (shared.rounds.load(Ordering::SeqCst), cpus_of(tid))
        });
        assert!(seen > 0, "the far helper never spun during the sync");
        assert_eq!(bound, [requester], "the far helper spun elsewhere");
        std::thread::sleep(Duration::from_millis(100));
        let after = shared.rounds.load(Ordering::SeqCst);
        // Both on one CPU: the helper there is enough.
        note_requester();
        awake.during(true, || std::thread::sleep(Duration::from_millis(300)));
        assert_eq!(
            shared.rounds.load(Ordering::SeqCst),
            after,
            "the far helper spun for a sync on the requester's own CPU"
        );
        // Nor for a group of writes.
        pin_to(requester);
        note_requester();
        pin_to(syncer);
        awake.during(false, || std::thread::sleep(Duration::from_millis(300)));
        assert_eq!(
            shared.rounds.load(Ordering::SeqCst),
            after,
            "the far helper spun for a group"
        );
        // A sync that outlasts its spin (`FAR_SPIN_MAX`): it stops early.
        let (at_100ms, at_300ms) = awake.during(true, || {
            std::thread::sleep(Duration::from_millis(100));
            let a = shared.rounds.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            (a, shared.rounds.load(Ordering::SeqCst))
        });
        assert_eq!(at_100ms, at_300ms, "the far helper spun past its limit");
    }
}
