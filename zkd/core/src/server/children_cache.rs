//! getChildren replies of big parents, kept encoded between calls.
//!
//! Listing a parent walks its run of the ordered map and writes every name;
//! with 10,000 children that was 70% of a loaded server's CPU (perf,
//! zkbench `children10k` 8x8), repeated for a list that had not changed.
//! ZooKeeper keeps such a cache too (`maxGetChildrenResponseCacheSize`).
//! A reply shares the cached list (`out_frame::OutFrame::Shared`) rather
//! than copying it.
//!
//! An entry is valid while the parent's (czxid, pzxid, cversion, child
//! count) is what it was when the list was encoded: adding or removing a
//! child moves pzxid (to that txn's zxid, larger than any before it) and the
//! count, and a parent deleted and created again has a new czxid. A
//! multi that fails restores all four along with the children.

use std::collections::HashMap;

use bytes::Bytes;

/// Parents with fewer children are listed directly (cheap enough, and
/// the cache stays small).
pub const MIN_CHILDREN: u32 = 256;
const MAX_ENTRIES: usize = 64;
const MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub czxid: i64,
    pub pzxid: i64,
    pub cversion: i32,
    pub count: u32,
}

struct Entry {
    version: Version,
    /// The reply's child list as sent: count, then each name; shared with
    /// the replies still on their way out.
    names: Bytes,
    used: u64,
}

#[derive(Default)]
pub struct ChildrenCache {
    entries: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

impl ChildrenCache {
    /// The encoded list of `path` if it is still `version`'s.
    pub fn get(&mut self, path: &str, version: Version) -> Option<Bytes> {
        self.clock += 1;
        let clock = self.clock;
        match self.entries.get_mut(path) {
            Some(e) if e.version == version => {
                e.used = clock;
                Some(e.names.clone())
            }
            _ => None,
        }
    }

    pub fn put(&mut self, path: &str, version: Version, names: Bytes) {
        if names.len() > MAX_BYTES / 4 {
            return;
        }
        self.clock += 1;
        self.bytes += names.len();
        let old = self.entries.insert(
            path.to_owned(),
            Entry {
                version,
                names,
                used: self.clock,
            },
        );
        if let Some(old) = old {
            self.bytes -= old.names.len();
        }
        // Evict the least recently used until within bounds (a scan of at
        // most MAX_ENTRIES, only when full).
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            let Some(victim) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&victim) {
                self.bytes -= e.names.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pzxid: i64) -> Version {
        Version {
            czxid: 1,
            pzxid,
            cversion: 1,
            count: 300,
        }
    }

    #[test]
    fn an_entry_is_returned_only_for_its_version() {
        let mut c = ChildrenCache::default();
        c.put("/a", v(5), Bytes::from_static(&[1, 2, 3]));
        assert_eq!(c.get("/a", v(5)).as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(c.get("/a", v(6)), None);
        assert_eq!(c.get("/b", v(5)), None);
    }

    #[test]
    fn stays_within_its_entry_and_byte_bounds() {
        let mut c = ChildrenCache::default();
        for i in 0..(MAX_ENTRIES + 10) {
            c.put(&format!("/p{i}"), v(1), Bytes::from(vec![0; 10]));
        }
        assert_eq!(c.entries.len(), MAX_ENTRIES);
        // The oldest went first.
        assert_eq!(c.get("/p0", v(1)), None);
        assert!(c.get(&format!("/p{}", MAX_ENTRIES + 9), v(1)).is_some());
        for i in 0..8 {
            c.put(
                &format!("/big{i}"),
                v(1),
                Bytes::from(vec![0; MAX_BYTES / 4]),
            );
        }
        assert!(c.bytes <= MAX_BYTES);
        let total: usize = c.entries.values().map(|e| e.names.len()).sum();
        assert_eq!(total, c.bytes);
    }
}
