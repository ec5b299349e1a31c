//! How the storage thread waits for its next job: a short look (yielding
//! the CPU each time round), then sleep on a queue whose receiver parks on
//! a futex without calling `sched_yield` first.
//!
//! Why look: with one request at a time the next write arrives within
//! ~100 µs of the last reply, and waking a sleeping thread costs tens of
//! µs on a VM (an IPI to an idle vCPU), twice per write.
//!
//! Why the look stops after a long yield, and why not `std::sync::mpsc`'s
//! blocking receive (which yields up to four times before it sleeps): a
//! thread that yields to another runnable thread on its CPU, even a busy
//! loop under SCHED_IDLE, has not slept, so its job's arrival does not wake
//! it; it waits for the timer tick (4 ms at HZ=250). With two such loops
//! running (`chrt --idle 0`), a build that always looked took p50 ~3.98 ms
//! per 1x1 write (~330 ops/s); ZooKeeper's was ~0.41 ms. So a yield that
//! kept the thread off the CPU for longer than zkd's own short turns
//! (`LONG_YIELD`) ends the look, and a few such looks in a row turn the
//! look off for a while (`LOOK_OFF`): 2705 ops/s, p50 209 µs, in the same
//! runs (both builds up, 6 alternations, medians). On an idle machine, and
//! in a 3-member ensemble, the two builds were within run-to-run noise.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SendError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::storage::Idle;

/// How long a standalone server's storage thread looks for the next job
/// before it sleeps: a lone client's next write comes one reply's round
/// trip after the sync (~60-80 µs). 600 µs measured no better there
/// (fresh server per run, 3 alternations, medians, ops/s: setData 1x1
/// 5857 -> 5895, delete 1x1 6139 -> 5740, create 1x1 10 KiB 4514 -> 4083,
/// create 16x32 145.6k -> 140.3k).
const LOOK_STANDALONE: Duration = Duration::from_micros(200);
/// The same for an ensemble member: its next job comes a whole quorum
/// round after the last (a follower's next proposal, ~300 µs at 1x1 on
/// this machine's loopback ensemble), past a 200 µs look, so each one
/// woke a sleeping thread. Fresh 3-member ensembles, 3 alternations,
/// medians, ops/s, 200 -> 600 µs: setData 1x1 2585 -> 3144, delete 1x1
/// 2411 -> 2819, multi10 1x1 2252 -> 2384, create 1x1 10 KiB 1687 ->
/// 1689, setData 16x32 67.6k -> 66.8k (noise); 1200 µs gained nothing
/// over 600; 0 (no look) lost (setData 1x1 2674-2833 -> 2274-2605).
///
/// What the look costs there: a trace of setData 1x1 (perf sched and
/// syscall events, 0.5 s) had the three members' storage threads yielding
/// to each other on one CPU, every ~2.5 µs, while the client and all three
/// event loops ran one after another on the other CPU (a woken thread goes
/// to the CPU that is not busy). Tried so that the event loops could use
/// the looking CPU too: the look under SCHED_IDLE (the thread switched
/// back to its own policy when a job came or the look ended), against
/// this look and against none. Fresh ensembles, 2 alternations of 4 s,
/// ops/s, this look / SCHED_IDLE look / none: setData 1x1 3006, 2468 /
/// 2422, 2137 / 2287, 2108; delete 1x1 2578, 2272 / 2300, 1824 / 2745,
/// 1839; multi10 1x1 2472, 2256 / 1896, 1772 / 1937, 1978; setData 16x32
/// 76.1k, 64.6k / 76.1k, 60.6k / 68.2k, 69.8k. Not kept.
const LOOK_ENSEMBLE: Duration = Duration::from_micros(600);
/// A yield that took longer than this gave the CPU to another thread for
/// more than a request's work (tens of µs).
const LONG_YIELD: Duration = Duration::from_micros(500);
/// Looks in a row that each ended on a long yield before the look is
/// turned off. One is not enough: in a 3-member ensemble on 2 CPUs under
/// 16x32 writes the members' own threads made 132 long yields in 16 s
/// (median 0.8 ms), and turning the look off at each cost 3-13% of the
/// ensemble's throughput.
const STRIKES: u32 = 3;
/// How long the look stays off then. Looking again costs a few ticks per
/// period while the CPU stays contended.
const LOOK_OFF: Duration = Duration::from_millis(200);

struct Shared {
    /// The receiver is parked or about to park.
    sleeping: AtomicBool,
    /// The receiving thread, known from its first wait on.
    receiver: OnceLock<Thread>,
}

impl Shared {
    fn wake(&self) {
        // Pairs with the receiver's fence: either it sees what was sent
        // when it looks once more before parking, or this sees it asleep.
        fence(Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.receiver.get() {
                t.unpark();
            }
        }
    }
}

pub struct JobTx<J> {
    /// `None` only while dropping: the sender goes first, so a receiver
    /// woken by the drop finds the queue disconnected.
    tx: Option<mpsc::Sender<J>>,
    shared: Arc<Shared>,
}

pub struct JobRx<J> {
    rx: mpsc::Receiver<J>,
    shared: Arc<Shared>,
}

pub fn channel<J>() -> (JobTx<J>, JobRx<J>) {
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        sleeping: AtomicBool::new(false),
        receiver: OnceLock::new(),
    });
    let tx = JobTx {
        tx: Some(tx),
        shared: shared.clone(),
    };
    (tx, JobRx { rx, shared })
}

impl<J> JobTx<J> {
    pub fn send(&self, job: J) -> Result<(), SendError<J>> {
        self.tx.as_ref().expect("sender present").send(job)?;
        self.shared.wake();
        Ok(())
    }
}

impl<J> Clone for JobTx<J> {
    fn clone(&self) -> Self {
        JobTx {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<J> Drop for JobTx<J> {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.shared.wake();
    }
}

impl<J> JobRx<J> {
    pub fn try_iter(&self) -> mpsc::TryIter<'_, J> {
        self.rx.try_iter()
    }

    /// The next job, parked until one comes (or `deadline`).
    fn wait(&self, deadline: Option<Instant>) -> Result<J, RecvTimeoutError> {
        self.shared.receiver.get_or_init(std::thread::current);
        loop {
            match self.rx.try_recv() {
                Ok(job) => return Ok(job),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            self.shared.sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let got = self.rx.try_recv();
            if !matches!(got, Err(TryRecvError::Empty)) {
                self.shared.sleeping.store(false, Ordering::SeqCst);
                return got.map_err(|_| RecvTimeoutError::Disconnected);
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                    _ => {
                        self.shared.sleeping.store(false, Ordering::SeqCst);
                        return Err(RecvTimeoutError::Timeout);
                    }
                },
            }
            self.shared.sleeping.store(false, Ordering::SeqCst);
        }
    }
}

/// Whether the storage thread looks before it sleeps (see the top), and
/// for how long.
pub struct Look {
    before_sleep: Duration,
    off_until: Option<Instant>,
    /// Looks in a row that ended on a long yield.
    strikes: u32,
}

impl Look {
    /// A standalone server's look, or an ensemble member's.
    pub fn new(ensemble: bool) -> Look {
        Look::lasting(if ensemble {
            LOOK_ENSEMBLE
        } else {
            LOOK_STANDALONE
        })
    }

    /// A look of `before_sleep` under the same rule (the event loop's,
    /// `evlook`).
    pub fn lasting(before_sleep: Duration) -> Look {
        Look {
            before_sleep,
            off_until: None,
            strikes: 0,
        }
    }

    /// How long a look lasts.
    pub fn length(&self) -> Duration {
        self.before_sleep
    }

    pub fn allowed(&self, now: Instant) -> bool {
        self.off_until.is_none_or(|t| now >= t)
    }

    /// A yield from `before` to `after`; false if it was long, which ends
    /// this look (and, at `STRIKES` in a row, turns the look off for
    /// `LOOK_OFF`).
    pub fn yielded(&mut self, before: Instant, after: Instant) -> bool {
        if after.duration_since(before) <= LONG_YIELD {
            return true;
        }
        self.strikes += 1;
        if self.strikes >= STRIKES {
            self.strikes = 0;
            self.off_until = Some(after + LOOK_OFF);
        }
        false
    }

    /// A look that found its job without a long yield.
    pub fn found(&mut self) {
        self.strikes = 0;
    }
}

/// The next job; with none queued, `idle` is called (a piece of work at a
/// time, looking for a job between pieces) until it has nothing left, and
/// again after the wait it asks for (with `true`) if no job comes first.
pub fn next_job<J>(
    rx: &JobRx<J>,
    look: &mut Look,
    mut idle: impl FnMut(bool) -> Idle,
) -> Option<J> {
    let mut until = Instant::now() + look.before_sleep;
    let mut busy = true;
    let mut waited = false;
    let mut wait = None;
    let mut long = false;
    loop {
        match rx.rx.try_recv() {
            Ok(job) => {
                if !long {
                    look.found();
                }
                return Some(job);
            }
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if busy => {
                let after_wait = std::mem::take(&mut waited);
                (busy, wait) = match idle(after_wait) {
                    Idle::More => (true, None),
                    Idle::Done => (false, None),
                    Idle::After(d) => (false, Some(d)),
                };
                // The look before sleeping starts when the work ends; not
                // after a wait that no job ended (no writes are coming).
                let now = Instant::now();
                until = if after_wait || !look.allowed(now) {
                    now
                } else {
                    now + look.before_sleep
                };
            }
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now < until {
                    std::thread::yield_now();
                    if !look.yielded(now, Instant::now()) {
                        (until, long) = (now, true);
                    }
                    continue;
                }
                match rx.wait(wait.map(|d| now + d)) {
                    Ok(job) => return Some(job),
                    Err(RecvTimeoutError::Disconnected) => return None,
                    Err(RecvTimeoutError::Timeout) => (busy, waited) = (true, true),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle work runs a piece at a time; asked to come back later, it is
    /// called again (told it waited) with no job; a job ends the wait.
    #[test]
    fn idle_work_is_resumed_after_the_wait_it_asks_for() {
        let (tx, rx) = channel::<u32>();
        let mut calls = Vec::new();
        let mut look = Look::new(false);
        let got = std::thread::scope(|s| {
            let sender = s.spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                tx.send(7).unwrap();
                tx
            });
            let got = next_job(&rx, &mut look, |waited| {
                calls.push(waited);
                match calls.len() {
                    1 => Idle::More,
                    2 | 3 => Idle::After(Duration::from_millis(10)),
                    _ => Idle::Done,
                }
            });
            drop(sender.join().unwrap());
            got
        });
        assert_eq!(got, Some(7));
        assert_eq!(calls, [false, false, true, true]);
        // With nothing to do and the sender gone, there is no next job.
        assert_eq!(
            next_job(&rx, &mut look, |_| Idle::After(Duration::from_millis(1))),
            None
        );
    }

    /// A parked receiver is woken by a send, and by the last sender going
    /// away; jobs keep their order.
    #[test]
    fn a_parked_receiver_wakes_for_a_job_and_for_the_last_sender_gone() {
        let (tx, rx) = channel::<u32>();
        let tx2 = tx.clone();
        // Not a scoped thread: a scope unparks its thread when the threads
        // it started end, which would wake the receiver for the test.
        let sender = std::thread::spawn(move || {
            for i in 0..3 {
                std::thread::sleep(Duration::from_millis(50));
                tx.send(i).unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
            drop(tx);
            std::thread::sleep(Duration::from_millis(50));
            drop(tx2);
        });
        // Each wait may last 10 s; one that was not woken lasts that long
        // (and still finds the job), so the slowest wait tells.
        let mut got = (Vec::new(), RecvTimeoutError::Timeout);
        let mut slowest = Duration::ZERO;
        loop {
            let t = Instant::now();
            let r = rx.wait(Some(t + Duration::from_secs(10)));
            slowest = slowest.max(t.elapsed());
            match r {
                Ok(job) => got.0.push(job),
                Err(e) => {
                    got.1 = e;
                    break;
                }
            }
        }
        assert!(slowest < Duration::from_secs(5), "a wait took {slowest:?}");
        sender.join().unwrap();
        assert_eq!(got, (vec![0, 1, 2], RecvTimeoutError::Disconnected));
    }

    #[test]
    fn a_wait_with_a_deadline_times_out() {
        let (_tx, rx) = channel::<u32>();
        let t = Instant::now();
        let got = rx.wait(Some(t + Duration::from_millis(30)));
        assert_eq!(got, Err(RecvTimeoutError::Timeout));
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    /// Short yields (zkd's own threads taking a turn) keep the look; a long
    /// one ends it; `STRIKES` looks in a row ended so turn it off until
    /// `LOOK_OFF` has passed; a look that finds its job starts the count
    /// again.
    #[test]
    fn long_yields_in_a_row_turn_the_look_off_for_a_while() {
        let mut look = Look::new(false);
        let t = Instant::now();
        let tick = Duration::from_millis(4);
        assert!(look.allowed(t));
        assert!(look.yielded(t, t + Duration::from_micros(80)));
        for _ in 1..STRIKES {
            assert!(!look.yielded(t, t + tick));
            assert!(look.allowed(t + tick));
        }
        look.found();
        for _ in 1..STRIKES {
            assert!(!look.yielded(t, t + tick));
        }
        assert!(look.allowed(t + tick));
        let back = t + tick;
        assert!(!look.yielded(t, back));
        assert!(!look.allowed(back));
        assert!(!look.allowed(back + LOOK_OFF - Duration::from_micros(1)));
        assert!(look.allowed(back + LOOK_OFF));
    }
}
