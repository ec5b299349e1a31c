//! The event loop's look (opt-in): after the core's last step, the worker
//! thread keeps polling its sockets for `eventLoopLookMicros` (yielding the
//! CPU each round) before it may sleep in epoll, so a frame that comes
//! soon finds it awake.
//!
//! Why: with one request in flight, every frame of a request's path came to
//! a worker asleep in epoll, and waking it costs tens of µs on a VM (the
//! interrupt to an idle vCPU, the switch in); `Config::worker_threads_for`
//! measured ~25 µs per wake-up on this kind of machine. A lone read on an
//! ensemble member is two of them (request in, then the client's next
//! request); a write through a follower is four on the follower and the
//! leader (request, proposal or forward, ack, commit). The storage thread
//! already looks before it sleeps (`jobq`); this is the same for the event
//! loop.
//!
//! How: a task that, while the core stepped less than the look ago,
//! yields the thread (`sched_yield`) and then yields to tokio; a yielded
//! task leaves the worker with work, so it polls its sockets without
//! blocking instead of sleeping, and comes back to the task. Past the look
//! the task parks until the core's next step. A yield that kept the thread
//! off the CPU for long ends the look, and a few in a row turn it off for
//! a while: the storage thread's rule (`jobq::Look`), for the same reason.
//!
//! Measured on the 2-core test machine: fresh 3-member loopback ensembles,
//! 1x1 via a follower (`zkbench`, 4 s runs), the look off and on in
//! alternation. ops/s, off / on:
//! - getData 100 B (300 µs): 14,879, 14,253, 9,775, 11,918, 10,524,
//!   10,888 / 29,119, 23,275, 25,203, 27,504, 25,037, 25,015; p50 61-93 ->
//!   32-39 µs. exists and getChildren likewise (500 µs): 14,912, 10,836,
//!   8,475 / 30,920, 29,019, 23,490 and 16,313, 11,315, 10,876 / 30,953,
//!   26,592, 23,178.
//! - Writes of 100 B (300 µs): delete 2,727, 2,811, 2,720, 2,896, 2,465,
//!   2,414, 2,225, 2,223, 2,132, 1,966 / 2,505, 3,260, 2,830, 2,884,
//!   2,773, 3,050, 2,459, 2,505, 2,459, 2,655 (8 pairs of 10 faster);
//!   setData 2,674, 2,846, 2,857, 2,340, 2,588 / 3,052, 2,922, 2,940,
//!   2,619, 2,930; multi10 2,082, 2,341, 2,481, 2,335, 2,246 / 2,509,
//!   2,411, 2,417, 2,763, 2,522.
//! - Writes of 10 KiB (500 µs): create 1,671, 1,886, 1,367 / 1,868,
//!   1,982, 1,814; setData 2,244, 975, 1,710 / 2,680, 1,537, 2,136.
//! - 16x32 over all three members (500 µs, 6 s): multi10 100 B 22,384,
//!   18,215 / 22,691, 19,478; read/write mix 10 KiB 66,615, 64,129 /
//!   68,530, 77,323; setData 100 B 63,790, 58,117 / 68,305, 57,588.
//!
//! What it costs there: the 1x1 read/write mix (nine reads in ten) of
//! 100 B, 18,543, 13,453, 13,303, 10,968, 13,428, 13,716, 11,845 off
//! against 12,390, 10,259, 10,504 (500 µs) and 11,655, 14,224, 9,412,
//! 10,051 (300 µs); its reads' p50 went from 20-28 to 38-54 µs. Between
//! its writes all three storage threads look too, and six threads taking
//! turns on two CPUs keep the client waiting for one. (A build in which
//! the event loop stood aside while its own storage thread looked got
//! part of that back, mix p50 28-42 µs, and lost part of the writes'
//! gain, delete 2,317 and 2,393 against 2,459 and 2,655: not kept.) With
//! two busy loops pinned one per CPU, 1x1 setData went from 1,077 and
//! 1,014 to 960 and 840: the long-yield rule keeps that from being worse.
//!
//! Off unless `eventLoopLookMicros` is set, because under load it costs
//! CPU that the server needs. A full `scripts/bench.sh --ensemble --repeat
//! 2` with a 300 µs look on every member, against session 60's table
//! without it (same machine, ZooKeeper's CPU per op alike in both): the
//! members' CPU per op of every 16x32 write row rose (multi10 100 B 119 ->
//! 142 µs, setData 10 KiB 109 -> 157, delete 10 KiB 43 -> 62, create
//! 10 KiB 183 -> 249), and their zkd/ZooKeeper ratios fell (multi10 100 B
//! 1.84 -> 1.51, setData 10 KiB 3.56 -> 2.26, delete 10 KiB 2.83 -> 1.76),
//! while the 1x1 reads' ratios doubled (getData 100 B 2.36 -> 5.31,
//! getChildren 1.95 -> 4.98) and the 1x1 writes' moved both ways
//! (multi10 100 B 1.55 -> 1.78, delete 10 KiB 1.69 -> 1.44). Ending the
//! look at any yield longer than 50 µs (the CPU wanted elsewhere) did not
//! remove the cost: 16x32 delete of 10 KiB, look off 61,739 ops/s at 26.9
//! µs per op (one run), with that rule 54,887 and 55,028 at 30-31 µs. On a
//! standalone server, where the storage thread's look and the
//! `syncIdleSpin` helpers already keep the CPUs from halting, a 200 µs
//! look cost lone writes a third (setData 1x1 6,100, 7,175, 7,112 ->
//! 4,152, 4,385, 4,290; getData 1x1 16,708, 18,106, 21,098 -> 32,201,
//! 34,148, 22,328).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::jobq;

/// When the core last stepped, for the look's task.
pub struct Steps {
    base: Instant,
    /// µs after `base`.
    last_us: AtomicU64,
    /// The task is parked (or about to be) until the next step.
    parked: AtomicBool,
    wake: Notify,
}

impl Steps {
    fn since_base(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_micros() as u64
    }

    /// The core took a step (after each one).
    pub fn stepped(&self) {
        self.last_us
            .store(self.since_base(Instant::now()), Ordering::SeqCst);
        // Pairs with the task's store of `parked` and its second load of
        // `last_us`: either it sees this step or this sees it parked.
        if self.parked.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }
}

/// Starts the look on the current runtime; `None` when it is off (`look`
/// zero).
pub fn start(look: Duration) -> Option<Arc<Steps>> {
    if look.is_zero() {
        return None;
    }
    let steps = Arc::new(Steps {
        base: Instant::now(),
        last_us: AtomicU64::new(0),
        parked: AtomicBool::new(false),
        wake: Notify::new(),
    });
    tokio::spawn(run(steps.clone(), jobq::Look::lasting(look)));
    Some(steps)
}

async fn run(steps: Arc<Steps>, mut rule: jobq::Look) {
    let mut seen = steps.last_us.load(Ordering::SeqCst);
    // This look ended on a long yield.
    let mut long = false;
    loop {
        let last = steps.last_us.load(Ordering::SeqCst);
        if last != seen {
            seen = last;
            if !std::mem::take(&mut long) {
                rule.found();
            }
        }
        let now = Instant::now();
        let until = steps.base + Duration::from_micros(last) + rule.length();
        if !long && now < until && rule.allowed(now) {
            std::thread::yield_now();
            if rule.yielded(now, Instant::now()) {
                tokio::task::yield_now().await;
                continue;
            }
            long = true;
        }
        steps.parked.store(true, Ordering::SeqCst);
        if steps.last_us.load(Ordering::SeqCst) == seen {
            steps.wake.notified().await;
        }
        steps.parked.store(false, Ordering::SeqCst);
    }
}
