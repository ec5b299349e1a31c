//! Tree records on their way to the RocksDB checkpoint, newest per key.
//!
//! Why they wait: the checkpoint is written without RocksDB's WAL and is
//! durable only once a flush of its memtable completes; until then the log
//! is what a crash redoes (see `storage`). A record can wait here as well
//! as in a memtable, and a znode written many times while it waits goes to
//! RocksDB once: one memtable insert and one record to sort in a flush
//! instead of one per write. Hot znodes (a counter, a config, a lock's
//! parent, a member's status) are what coordination workloads rewrite.
//!
//! Waiting only pays when keys are rewritten. When a window's writes were
//! mostly new keys (bulk creates, deletes, big values that fill the byte
//! budget before any key comes back), records go straight through, one
//! batch per commit as if there were no window, and waiting is tried again
//! later: a window of new keys costs a pass over cold memory at write-out
//! and holds the storage thread while it is written.
//!
//! What is written out is one batch with the zxid its records reach, so
//! every state RocksDB can flush, at its own moment or ours, is one zxid's
//! state: the same rule as writing each group's batch at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long records may wait and how much of them; when to stop waiting.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Records wait at most this long after the first of them arrived
    /// (it bounds what a crash redoes on top of the memtable's share).
    pub max_age: Duration,
    /// Bytes (keys and values) waiting that trigger a write-out: memory,
    /// and how long one write-out holds the storage thread.
    pub max_bytes: usize,
    /// A window of at least `min_puts` writes in which fewer than one in
    /// `rewrite_share` replaced a waiting record did not pay...
    pub min_puts: u64,
    pub rewrite_share: u64,
    /// ...and records then go straight through this long.
    pub straight_for: Duration,
}

/// Measured on the build machine (3-member ensemble, zkbench 16x32,
/// 1,000 keys per connection, 2 alternations): multi10 100 B gained 16-22%
/// waiting up to 1 s. Standalone, 32 MiB windows lost 13-17% of 16x32
/// 10 KiB creates to write-outs holding the storage thread; 4 MiB gained
/// 6-10% there.
pub const LIMITS: Limits = Limits {
    max_age: Duration::from_millis(1000),
    max_bytes: 4 << 20,
    min_puts: 256,
    rewrite_share: 8,
    straight_for: Duration::from_secs(8),
};

pub struct Dirty {
    /// Key -> value, or `None` for a delete.
    records: HashMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    /// The zxid the records reach (the checkpoint's `last_zxid` once they
    /// are written).
    zxid: Option<i64>,
    /// When the first waiting record arrived.
    since: Option<Instant>,
    /// Writes and rewrites of waiting keys in this window.
    puts: u64,
    rewrites: u64,
    /// Records go straight through until then.
    straight_until: Option<Instant>,
    limits: Limits,
}

/// What a write-out puts into RocksDB.
pub struct WriteOut {
    pub records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub zxid: Option<i64>,
}

impl Dirty {
    pub fn new(limits: Limits) -> Dirty {
        Dirty {
            records: HashMap::new(),
            bytes: 0,
            zxid: None,
            since: None,
            puts: 0,
            rewrites: 0,
            straight_until: None,
            limits,
        }
    }

    /// A record written at `now`; it replaces any waiting one of its key.
    pub fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>, now: Instant) {
        self.since.get_or_insert(now);
        self.puts += 1;
        let key_len = key.len();
        let new_len = value.as_ref().map_or(0, Vec::len);
        match self.records.insert(key, value) {
            // The key is counted already; only the value changes.
            Some(old) => {
                self.rewrites += 1;
                self.bytes = self.bytes - old.map_or(0, |v| v.len()) + new_len;
            }
            None => self.bytes += key_len + new_len,
        }
    }

    /// Everything put so far belongs to the state at `zxid`, reached at
    /// `now`.
    pub fn reached(&mut self, zxid: i64, now: Instant) {
        self.since.get_or_insert(now);
        self.zxid = Some(self.zxid.map_or(zxid, |z| z.max(zxid)));
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.zxid.is_none()
    }

    fn straight(&self, now: Instant) -> bool {
        self.straight_until.is_some_and(|u| now < u)
    }

    /// When the waiting records must be written out at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + self.limits.max_age)
    }

    /// Must the records be written out now?
    pub fn due(&self, now: Instant) -> bool {
        !self.is_empty()
            && (self.straight(now)
                || self.bytes >= self.limits.max_bytes
                || self.deadline().is_some_and(|d| now >= d))
    }

    /// Takes what waits at `now`, leaving nothing, and judges whether the
    /// window paid for itself.
    pub fn take(&mut self, now: Instant) -> WriteOut {
        let l = &self.limits;
        if !self.straight(now)
            && self.puts >= l.min_puts
            && self.rewrites * l.rewrite_share < self.puts
        {
            self.straight_until = Some(now + l.straight_for);
        }
        self.puts = 0;
        self.rewrites = 0;
        self.bytes = 0;
        self.since = None;
        WriteOut {
            records: self.records.drain().collect(),
            zxid: self.zxid.take(),
        }
    }

    /// Drops what waits (a snapshot replaced the state it belongs to).
    pub fn clear(&mut self, now: Instant) {
        self.take(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> Option<Vec<u8>> {
        Some(vec![7; n])
    }

    fn limits(max_bytes: usize) -> Limits {
        Limits {
            max_age: Duration::from_millis(500),
            max_bytes,
            min_puts: 4,
            rewrite_share: 4,
            straight_for: Duration::from_secs(8),
        }
    }

    #[test]
    fn a_key_written_many_times_is_written_out_once_with_its_last_value() {
        let t = Instant::now();
        let mut d = Dirty::new(limits(1 << 20));
        d.put(b"a".to_vec(), value(10), t);
        d.put(b"b".to_vec(), value(5), t);
        d.put(b"a".to_vec(), value(3), t);
        d.put(b"b".to_vec(), None, t);
        d.reached(9, t);
        d.reached(7, t);
        let mut out = d.take(t);
        out.records.sort();
        assert_eq!(
            out.records,
            vec![(b"a".to_vec(), value(3)), (b"b".to_vec(), None)]
        );
        assert_eq!(out.zxid, Some(9));
        assert!(d.is_empty());
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn bytes_count_each_key_once_and_its_latest_value() {
        let t = Instant::now();
        let mut d = Dirty::new(limits(100));
        d.put(b"k".to_vec(), value(60), t);
        d.put(b"k".to_vec(), value(60), t);
        // 61 bytes: rewriting a key does not add up.
        assert!(!d.due(t));
        d.put(b"k".to_vec(), None, t);
        d.put(b"j".to_vec(), value(98), t);
        // 1 + 1 + 98.
        assert!(d.due(t));
        d.take(t);
        assert!(!d.due(t));
    }

    #[test]
    fn records_are_due_an_age_after_the_first_of_them() {
        let t = Instant::now();
        let age = limits(0).max_age;
        let mut d = Dirty::new(limits(1 << 20));
        assert!(!d.due(t + age * 10));
        d.put(b"a".to_vec(), value(1), t);
        d.put(b"b".to_vec(), value(1), t + age / 2);
        assert_eq!(d.deadline(), Some(t + age));
        assert!(!d.due(t + age / 2));
        assert!(d.due(t + age));
        d.take(t + age);
        d.put(b"c".to_vec(), value(1), t + age * 2);
        assert_eq!(d.deadline(), Some(t + age * 3));
        // A zxid alone (an ensemble's applied mark) waits too.
        d.take(t + age * 2);
        d.reached(12, t + age * 4);
        assert!(d.due(t + age * 5));
    }

    #[test]
    fn a_window_of_new_keys_sends_records_straight_through_for_a_while() {
        let t = Instant::now();
        let l = limits(1 << 20);
        let mut d = Dirty::new(l);
        // 1 rewrite in 5 puts is under one in four: did not pay.
        for k in [b"a", b"b", b"c", b"d", b"a"] {
            d.put(k.to_vec(), value(1), t);
        }
        d.take(t + l.max_age);
        let later = t + l.max_age + Duration::from_millis(1);
        d.put(b"e".to_vec(), value(1), later);
        assert!(d.due(later), "straight through");
        d.take(later);
        // Waiting is tried again after `straight_for`.
        let again = t + l.max_age + l.straight_for;
        d.put(b"f".to_vec(), value(1), again);
        assert!(!d.due(again));
    }

    #[test]
    fn a_window_of_rewrites_keeps_records_waiting() {
        let t = Instant::now();
        let l = limits(1 << 20);
        let mut d = Dirty::new(l);
        // 2 rewrites in 5 puts.
        for k in [b"a", b"b", b"c", b"a", b"b"] {
            d.put(k.to_vec(), value(1), t);
        }
        d.take(t + l.max_age);
        let later = t + l.max_age + Duration::from_millis(1);
        d.put(b"e".to_vec(), value(1), later);
        assert!(!d.due(later));
        // Too few puts to judge: waiting goes on.
        d.take(later + l.max_age);
        d.put(b"f".to_vec(), value(1), later + l.max_age);
        assert!(!d.due(later + l.max_age));
    }
}
