//! The CPU scheduler's time slice asked for zkd's threads
//! (`schedSliceMicros`).
//!
//! Why: Linux's fair scheduler (EEVDF, 6.6 and later) lets a woken thread
//! run at once only when its virtual deadline is earlier than that of the
//! thread on the CPU; otherwise it waits until that thread's slice ends,
//! up to the next timer tick. zkd's threads sleep and wake for every lone
//! request (the storage thread on its fdatasync, a worker on its socket).
//! On the 2-CPU build machine with two busy loops running (nice 0), a
//! perf sched trace showed the storage thread woken by its completed flush
//! and then left waiting 1.5-3.2 ms for the tick. Since Linux 6.12 a
//! thread may ask for a shorter slice (`sched_attr.sched_runtime` under its
//! fair policy; no privilege needed): its deadlines come sooner and it
//! takes the CPU when it wakes.
//!
//! Measured there, standalone, two servers up (this build and the one
//! before), 6 alternating 2 s zkbench runs each, medians:
//! - two busy loops, 1x1: setData 308 -> 727 ops/s (p50 3944 -> 232 µs),
//!   create 309 -> 584;
//! - idle machine: 1x1 setData 3743 -> 3810, create 3546 -> 3726,
//!   getData 13894 -> 14016; 16x32 create 115.7k -> 116.0k, setData
//!   187k -> 200k (all within run-to-run noise);
//! - a 3-member ensemble on the same machine: no change either way.
//!
//! Not everywhere: those busy loops ran unpinned, in the script's session.
//! With one pinned to each CPU, each in its own session (`bench.sh --busy
//! 2`), zkd waited about one tick per request with and without the slice
//! (1x1 setData 263-282 ops/s; ZooKeeper 580-1409 in the same runs).
//!
//! Why 300 µs: a 100 µs slice (set from outside on a running server) cost
//! batched creates 10% (16x32, median of 5: 145k -> 132k ops/s) for little more
//! gain under contention; 1 ms gained less under contention.
//!
//! Set on the starting thread before any other exists: threads inherit it
//! (the runtime's workers, the storage thread, RocksDB's). The policy and
//! nice value the process was started with are kept.

use std::io;

/// Linux's `struct sched_attr` (first version, 48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// The name `chrt(1)` gives a scheduling policy.
pub fn policy_name(policy: u32) -> String {
    match policy {
        SCHED_OTHER => "SCHED_OTHER".into(),
        1 => "SCHED_FIFO".into(),
        2 => "SCHED_RR".into(),
        SCHED_BATCH => "SCHED_BATCH".into(),
        SCHED_IDLE => "SCHED_IDLE".into(),
        6 => "SCHED_DEADLINE".into(),
        n => format!("policy {n}"),
    }
}

/// What became of the request for a slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Slice {
    /// The kernel reports the slice asked for.
    Set,
    /// The thread runs under a policy without a slice (real-time, idle,
    /// deadline) that someone chose on purpose; left alone.
    OtherPolicy(u32),
    /// The kernel took the call but reports another slice (before 6.12 it
    /// has no per-thread slice and reports none).
    NotKept { asked_ns: u64, got_ns: u64 },
}

fn get_attr() -> io::Result<SchedAttr> {
    let mut a = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `a` is a writable sched_attr of `size` bytes; tid 0 is the
    // calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut a as *mut SchedAttr,
            size,
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(a)
}

/// Applies `a` to the calling thread.
fn set_attr(a: &SchedAttr) -> io::Result<()> {
    // SAFETY: `a` is a filled sched_attr; tid 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, a as *const SchedAttr, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel for a slice of `us` microseconds for the calling
/// thread (and the threads it starts from now on).
pub fn set_slice(us: u64) -> io::Result<Slice> {
    let mut a = get_attr()?;
    if a.policy != SCHED_OTHER && a.policy != SCHED_BATCH {
        return Ok(Slice::OtherPolicy(a.policy));
    }
    let asked_ns = us * 1000;
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    a.flags &= SCHED_FLAG_RESET_ON_FORK;
    a.runtime = asked_ns;
    a.deadline = 0;
    a.period = 0;
    set_attr(&a)?;
    let got_ns = get_attr()?.runtime;
    if got_ns == asked_ns {
        Ok(Slice::Set)
    } else {
        Ok(Slice::NotKept { asked_ns, got_ns })
    }
}

/// Puts the calling thread under SCHED_IDLE, keeping the slice it has
/// (a plain `sched_setscheduler` would reset it to the kernel's).
pub fn set_idle() -> io::Result<()> {
    let mut a = get_attr()?;
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    a.policy = SCHED_IDLE;
    a.flags &= SCHED_FLAG_RESET_ON_FORK;
    a.nice = 0;
    a.priority = 0;
    a.deadline = 0;
    a.period = 0;
    set_attr(&a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run on a thread of its own: the slice stays with that thread.
    #[test]
    fn the_slice_asked_for_is_what_the_thread_and_its_children_get() {
        std::thread::spawn(|| {
            let nice_before = get_attr().unwrap().nice;
            match set_slice(300).unwrap() {
                Slice::Set => {
                    assert_eq!(get_attr().unwrap().nice, nice_before);
                    let child = std::thread::spawn(|| get_attr().unwrap().runtime);
                    assert_eq!(child.join().unwrap(), 300_000);
                }
                // An older kernel: nothing to check but that it said so.
                Slice::NotKept { got_ns, .. } => assert_ne!(got_ns, 300_000),
                other => panic!("{other:?}"),
            }
        })
        .join()
        .unwrap();
    }
}
