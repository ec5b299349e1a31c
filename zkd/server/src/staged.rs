//! The checkpoint's records waiting to be written to RocksDB: of every node
//! and session that synced groups changed since the last write, the last
//! record only.
//!
//! Why they wait: RocksDB keeps every record written until a flush sorts
//! the memtable and drops all but the newest of each key. A node rewritten
//! a hundred times between two flushes was copied, sorted and dropped 99
//! times. Under multi10 of 100 B setData over 16,000 nodes on a 3-member
//! ensemble (16x32, ~150,000 records a second on each member), RocksDB's
//! flush threads sorting memtables were 25% of the machine's samples
//! (`perf`). Held here, a record that is replaced before the next write
//! costs one hash-map update.
//!
//! Only while records repeat keys: when they do not (creates of new
//! nodes), holding them saves nothing, and writing 8 MiB of them at once
//! stalled the storage thread (standalone, 16x32 creates of 100 B at
//! ~140,000/s: p99 11 -> 20 ms, 0.87x the throughput, A/B). `Recent`
//! tells the two apart.
//!
//! What keeps this safe (see `storage` for the rules): the records are
//! written all at once, with the zxid they reach, so the checkpoint is
//! always one txn's state; their txns are in the synced log, which a crash
//! redoes, as it redoes a memtable that was never flushed.

use std::collections::HashMap;

use zkd_core::record::NodeRecord;
use zkd_core::server::Persist;

/// Bytes of bookkeeping counted per record (the map's slot, the key's and
/// value's allocations), so a map of tiny records is bounded too.
const PER_RECORD: usize = 64;

/// Slots of `Recent`: a key comes back as a hit if no other key took its
/// slot since. Records rewriting K keys at random hit about e^(-K/slots)
/// of the time: 16,000 keys 88%, 60,000 keys 63%.
const RECENT_SLOTS: usize = 1 << 17;

/// Over how many records the repeat rate is averaged (about).
const RATE_RECORDS: f32 = 1024.0;

/// Records this big count as new keys whatever their key: 8 MiB holds
/// fewer than 2,048 of them, too few to save much, and writing them all
/// at once stalled the storage thread (3-member ensemble, multi10 1x1 of
/// 10 KiB over 1,000 nodes, A/B against no holding: 0.958x, p99 4.0 ->
/// 7.1 ms).
const BIG_RECORD: usize = 4096;

/// Whether records lately repeat keys: a tag of each node key's hash in
/// a slot picked by the hash, and the average share of records that found
/// their own tag there.
pub struct Recent {
    slots: Box<[u32]>,
    rate: f32,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            slots: vec![0; RECENT_SLOTS].into_boxed_slice(),
            rate: 0.0,
        }
    }
}

/// A cheap hash of a key for `Recent` (multiply-rotate over 8-byte words):
/// a collision only makes a record count as a repeat or not, so it needs
/// no protection from chosen keys, and it runs on every record.
fn key_hash(key: &[u8]) -> u64 {
    let mut h = 0u64;
    for word in key.chunks(8) {
        let mut w = [0u8; 8];
        w[..word.len()].copy_from_slice(word);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h
}

impl Recent {
    /// Counts one record: a hit if its key's tag is still in its slot. A
    /// record not `counted` is a miss, but leaves its tag: a later record
    /// of its key that is counted is a hit (`Staged::observe` says why).
    pub fn see(&mut self, key: &[u8], counted: bool) {
        let hash = key_hash(key);
        // The high bits are the best mixed: the slot from the top 16,
        // the tag from the next 32 (never 0, the empty slot).
        let slot = &mut self.slots[(hash >> 48) as usize % RECENT_SLOTS];
        let tag = (hash >> 16) as u32 | 1;
        let hit = std::mem::replace(slot, tag) == tag && counted;
        self.rate += (f32::from(u8::from(hit)) - self.rate) / RATE_RECORDS;
    }

    /// The share of the latest records that repeated a key (about the
    /// last `RATE_RECORDS`).
    pub fn rate(&self) -> f32 {
        self.rate
    }

    /// As if the latest records had repeated keys at `rate`.
    #[cfg(test)]
    pub fn assume(&mut self, rate: f32) {
        self.rate = rate;
    }
}

#[derive(Default)]
pub struct Staged {
    pub nodes: HashMap<String, Option<Vec<u8>>>,
    pub sessions: HashMap<i64, Option<Vec<u8>>>,
    /// About how many bytes the records hold.
    pub bytes: usize,
    /// The zxid the checkpoint reaches once they are written.
    pub last: Option<i64>,
    recent: Recent,
}

fn size(key: usize, v: &Option<Vec<u8>>) -> usize {
    key + v.as_ref().map_or(0, Vec::len) + PER_RECORD
}

impl Staged {
    /// Takes the records of a group (in order: a later record of a key
    /// replaces an earlier one), which reaches `last`.
    pub fn add(&mut self, group: &mut [Persist], last: Option<i64>) {
        self.observe(group);
        for p in group.iter_mut() {
            for (path, v) in p.nodes.drain(..) {
                let v = v.map(NodeRecord::into_vec);
                let key = path.len();
                self.bytes += size(key, &v);
                if let Some(old) = self.nodes.insert(path, v) {
                    self.bytes -= size(key, &old);
                }
            }
            for (id, v) in p.sessions.drain(..) {
                self.bytes += size(8, &v);
                if let Some(old) = self.sessions.insert(id, v) {
                    self.bytes -= size(8, &old);
                }
            }
        }
        if let Some(z) = last {
            self.last = Some(self.last.map_or(z, |l| l.max(z)));
        }
    }

    /// Counts a group's node records as repeats or new keys (`add` does,
    /// and so must a group written without being held).
    ///
    /// A big record counts as a new key but leaves its key's tag, so that
    /// what comes after it (a delete's empty record) counts as a repeat:
    /// deletes of big nodes are then held like deletes of small ones.
    /// When big records left the slots alone, 1x1 deletes of 10 KiB nodes
    /// (half their records a new key each, half the parent) never
    /// counted as repeating, and every group went to RocksDB on its own
    /// (its write ~2.6% of the machine's samples, gone this way). 3
    /// members on loopback, 10,000 nodes of 10 KiB, delete 1x1 via a
    /// follower, fresh ensembles, 6 alternations, ops/s before / after:
    /// 2,112, 2,177, 2,110, 2,510, 2,464, 2,563 / 2,528, 1,929, 2,467,
    /// 2,405, 2,643, 2,812. Standalone, where a group's RocksDB write
    /// comes after its replies, it moved within noise: 20,000 nodes, 11
    /// alternations, median 5,780 / 5,523 ops/s (4 pairs of 11 higher
    /// after).
    pub fn observe(&mut self, group: &[Persist]) {
        for p in group {
            for (path, v) in &p.nodes {
                let small = v.as_ref().map_or(0, NodeRecord::len) < BIG_RECORD;
                self.recent.see(path.as_bytes(), small);
            }
        }
    }

    /// Whether three in four of the latest node records repeated a key
    /// seen lately: holding records then saves writing most of them. Not
    /// half: a create is two records, the new node and its parent, and
    /// the parents repeat, so 16x32 creates sat at half, held and written
    /// by turns (standalone, 100 B, A/B against no holding: 0.86x, p99
    /// 12.1 -> 20.7 ms; at three in four 0.96x, 9.6 -> 10.2 ms, within
    /// this machine's noise).
    pub fn repeating(&self) -> bool {
        self.recent.rate >= 0.75
    }

    /// As if records had repeated keys lately (tests of what follows).
    #[cfg(test)]
    pub fn assume_repeating(&mut self) {
        self.recent.rate = 1.0;
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.sessions.is_empty() && self.last.is_none()
    }

    /// Forgets what is held: it was written, or a snapshot replaced the
    /// state it belongs to. The maps keep their room for the next records.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.sessions.clear();
        self.bytes = 0;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persist(nodes: &[(&str, Option<&[u8]>)], sessions: &[(i64, Option<&[u8]>)]) -> Persist {
        Persist {
            last_zxid: 0,
            log: Vec::new(),
            nodes: nodes
                .iter()
                .map(|(p, v)| (p.to_string(), v.map(|v| NodeRecord::Whole(v.to_vec()))))
                .collect(),
            sessions: sessions
                .iter()
                .map(|(id, v)| (*id, v.map(<[u8]>::to_vec)))
                .collect(),
        }
    }

    /// Across records and groups, each key keeps its last record, and the
    /// byte count follows what is held, not what passed through.
    #[test]
    fn keeps_each_keys_last_record_and_counts_what_it_holds() {
        let mut s = Staged::default();
        let mut g1 = [
            persist(
                &[("/a", Some(b"1")), ("/b", Some(b"bb"))],
                &[(7, Some(b"s"))],
            ),
            persist(&[("/a", Some(b"22")), ("/b", None)], &[]),
        ];
        s.add(&mut g1, Some(5));
        assert!(g1
            .iter()
            .all(|p| p.nodes.is_empty() && p.sessions.is_empty()));
        let mut g2 = [persist(&[("/a", Some(b"333")), ("/c", None)], &[(7, None)])];
        s.add(&mut g2, Some(6));
        assert_eq!(s.nodes["/a"].as_deref(), Some(&b"333"[..]));
        assert_eq!(s.nodes["/b"], None);
        assert_eq!(s.nodes["/c"], None);
        assert_eq!(s.nodes.len(), 3);
        assert_eq!(s.sessions[&7], None);
        assert_eq!(s.last, Some(6));
        // /a: 2 + 3, /b: 2, /c: 2, session 7: 8.
        assert_eq!(s.bytes, 5 + 2 + 2 + 8 + 4 * PER_RECORD);
        // A group without an applied zxid does not move it back.
        s.add(&mut [], None);
        s.add(&mut [], Some(4));
        assert_eq!(s.last, Some(6));
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.bytes, 0);
    }

    /// New keys (creates) do not count as repeats; 16,000 keys rewritten in
    /// turn do, and new keys afterwards stop it again.
    #[test]
    fn tells_rewrites_from_new_keys() {
        let mut s = Staged::default();
        let write = |s: &mut Staged, keys: std::ops::Range<usize>| {
            for k in keys {
                let v: Option<&[u8]> = Some(b"v");
                s.add(
                    &mut [persist(&[(&format!("/k{}", k % 16_000), v)], &[])],
                    None,
                );
                if k % 100 == 0 {
                    s.clear();
                }
            }
        };
        write(&mut s, 0..16_000);
        assert!(!s.repeating(), "rate {}", s.recent.rate);
        write(&mut s, 16_000..64_000);
        assert!(s.repeating(), "rate {}", s.recent.rate);
        let fresh = |s: &mut Staged| {
            for k in 0..4_000 {
                let v: Option<&[u8]> = Some(b"v");
                s.add(&mut [persist(&[(&format!("/new{k}"), v)], &[])], None);
            }
        };
        fresh(&mut s);
        assert!(!s.repeating(), "rate {}", s.recent.rate);
        // Creates: a new node and one of 16 parents, again and again.
        for k in 0..8_000 {
            let v: Option<&[u8]> = Some(b"v");
            let (node, parent) = (format!("/p{}/n{k}", k % 16), format!("/p{}", k % 16));
            s.add(&mut [persist(&[(&node, v), (&parent, v)], &[])], None);
        }
        assert!(!s.repeating(), "rate {}", s.recent.rate);
        // 60,000 keys: a map of 8 MiB would hold a fraction of them.
        let mut s = Staged::default();
        for k in 0..300_000u64 {
            let v: Option<&[u8]> = Some(b"v");
            let key = format!("/m{}", k * 7919 % 60_000);
            s.add(&mut [persist(&[(&key, v)], &[])], None);
            if k % 100 == 0 {
                s.clear();
            }
        }
        assert!(!s.repeating(), "rate {}", s.recent.rate);
        // Big records rewriting 100 keys.
        let mut s = Staged::default();
        for k in 0..20_000 {
            let v: Option<&[u8]> = Some(&[7; BIG_RECORD]);
            s.add(&mut [persist(&[(&format!("/b{}", k % 100), v)], &[])], None);
            s.clear();
        }
        assert!(!s.repeating(), "rate {}", s.recent.rate);
    }

    /// Deletes of big nodes count as repeats: the big record a node was
    /// created with leaves its key's tag for the delete's empty record.
    #[test]
    fn deletes_of_big_nodes_count_as_repeats() {
        let mut s = Staged::default();
        // Each of 10,000 nodes written with `data`, with its parent.
        let write = |s: &mut Staged, data: Option<&[u8]>| {
            for k in 0..10_000 {
                let node = format!("/d/n{k}");
                s.add(
                    &mut [persist(&[(&node, data), ("/d", Some(b"p"))], &[])],
                    None,
                );
                s.clear();
            }
        };
        write(&mut s, Some(&[7; BIG_RECORD]));
        // A new big node and its parent each time: half the records repeat.
        assert!(!s.repeating(), "rate {}", s.recent.rate);
        write(&mut s, None);
        assert!(s.repeating(), "rate {}", s.recent.rate);
    }
}
