//! The order the tree keeps its nodes in: by parent, then by name. A node's
//! children are then one contiguous run of the ordered map, found by a range
//! query, so no node carries a set of child names and no hash table sits
//! beside the map: a hash map of paths (2^21 slots of 24 bytes for a
//! million znodes) plus a B-tree of names in every parent cost more than
//! the ordered map's slots. Lookups compare keys instead of hashing once;
//! the `get` rows of `scripts/bench.sh` measure what that costs. The map's
//! keys (`Key`) hold short paths inline, so those comparisons stay inside
//! the map's nodes.
//!
//! The order is the checkpoint's key order (`parent NUL name`, see
//! `zkd_server::storage::node_key`), so a tree read back from disk arrives
//! sorted and is built in one pass with full B-tree leaves.

use std::cmp::Ordering;
use std::ops::Bound;

/// A znode path compared as (parent, name): `/` first, then the children of
/// `/` by name, then `/a`'s children, and so on.
#[repr(transparent)]
#[derive(Debug, PartialEq, Eq)]
pub struct PathKey(str);

impl PathKey {
    pub fn new(path: &str) -> &PathKey {
        // SAFETY: PathKey is a transparent wrapper around str.
        unsafe { &*(path as *const str as *const PathKey) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name after the last `/` (what `ChildRange::name` must agree with).
    #[cfg(test)]
    pub fn name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// Whether this key's parent part (before its last `/`) is `part`.
    pub fn has_parent_part(&self, part: &[u8]) -> bool {
        let b = self.0.as_bytes();
        b.len() > part.len()
            && b.starts_with(part)
            && b[part.len()] == b'/'
            && !b[part.len() + 1..].contains(&b'/')
    }
}

/// Bytes of a path kept inside its map key (see `Key`).
const INLINE: usize = 22;

/// The ordered map's key: a path, kept inside the key itself when it is
/// at most `INLINE` bytes (most are), else boxed. A lookup compares its
/// path with a few keys per level of the map; boxed, each comparison first
/// followed a pointer to bytes elsewhere in memory, a cache miss for most
/// keys in a tree of any size (`BTreeMap::get_mut` was 12.9% of zkd's
/// samples under 16x32 multi10 of 100 B setData over 16,000 nodes,
/// `perf`). Inline, the keys a level compares are in the map's own node:
/// `PathKey::cmp` went from 7.6% to 4.3% of the samples of that run
/// (throughput moved within this machine's noise). 24 bytes either way, 8
/// more than a boxed path, but a short path has no allocation of its own:
/// RSS after a restart with 1,000,000 znodes of 100 B, 296 -> 275 MB
/// (5 runs each, every run within 1 MB).
pub struct Key(Repr);

enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<str>),
}

impl Key {
    pub fn new(path: &str) -> Key {
        if path.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..path.len()].copy_from_slice(path.as_bytes());
            Key(Repr::Inline {
                len: path.len() as u8,
                bytes,
            })
        } else {
            Key(Repr::Boxed(path.into()))
        }
    }

    /// The same, keeping a long path's allocation.
    pub fn from_string(path: String) -> Key {
        if path.len() <= INLINE {
            Key::new(&path)
        } else {
            Key(Repr::Boxed(path.into_boxed_str()))
        }
    }

    pub fn path(&self) -> &PathKey {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                // SAFETY: the bytes were copied from a `&str` whole (`new`),
                // so they are UTF-8.
                PathKey::new(unsafe { std::str::from_utf8_unchecked(&bytes[..*len as usize]) })
            }
            Repr::Boxed(s) => PathKey::new(s),
        }
    }
}

impl std::ops::Deref for Key {
    type Target = PathKey;
    fn deref(&self) -> &PathKey {
        self.path()
    }
}

impl std::borrow::Borrow<PathKey> for Key {
    fn borrow(&self) -> &PathKey {
        self.path()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.path().fmt(f)
    }
}

/// The order (and equality) of the paths, as `Borrow` requires.
impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.path().cmp(other.path())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.path() == other.path()
    }
}

impl Eq for Key {}

/// How many leading bytes `a` and `b` share, compared 8 at a time: keys
/// met in one lookup share long prefixes (`/app/config/...`), and this
/// comparison is most of a lookup's cost.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            // Little-endian: the lowest differing bit is in the first
            // differing byte.
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

impl Ord for PathKey {
    /// Byte order of the strings with each one's last `/` read as NUL (the
    /// checkpoint key), in one pass: after the common prefix, a string
    /// whose parent part goes on (a `/` still ahead) sorts after one whose
    /// does not; if both go on, the first differing byte decides, a last
    /// `/` there counting as the least byte.
    fn cmp(&self, other: &PathKey) -> Ordering {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let n = common_prefix(a, b);
        let (ta, tb) = (&a[n..], &b[n..]);
        match (ta.contains(&b'/'), tb.contains(&b'/')) {
            // The tails differ at their first byte, or one is empty: that
            // byte decides. (A call into memcmp for the rest was 2% of the
            // samples of two members of a loaded ensemble, `perf`, multi
            // of setData.)
            (false, false) => ta.first().cmp(&tb.first()),
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (true, true) => {
                // Both tails are non-empty and differ at their first byte.
                let first = |t: &[u8]| match t[0] {
                    b'/' if !t[1..].contains(&b'/') => 0,
                    c => c,
                };
                match first(ta).cmp(&first(tb)) {
                    // One is a NUL (only in a range bound), the other a
                    // last `/`: the rest decides.
                    Ordering::Equal => {
                        let last_slash = |t: &[u8]| t.iter().rposition(|&c| c == b'/');
                        fn read(t: &[u8], last: Option<usize>) -> impl Iterator<Item = u8> + '_ {
                            t.iter()
                                .enumerate()
                                .map(move |(i, &c)| if Some(i) == last { 0 } else { c })
                        }
                        read(ta, last_slash(ta)).cmp(read(tb, last_slash(tb)))
                    }
                    o => o,
                }
            }
        }
    }
}

impl PartialOrd for PathKey {
    fn partial_cmp(&self, other: &PathKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where `parent`'s children are: right after the key whose parts are
/// (parent, "") (for `/`, the root's own key), for as long as keys have
/// `parent` as their parent part.
pub struct ChildRange {
    low: String,
    part_len: usize,
}

impl ChildRange {
    pub fn new(parent: &str) -> ChildRange {
        let part = if parent == "/" { "" } else { parent };
        ChildRange {
            low: format!("{part}/"),
            part_len: part.len(),
        }
    }

    pub fn start(&self) -> (Bound<&PathKey>, Bound<&PathKey>) {
        (Bound::Excluded(PathKey::new(&self.low)), Bound::Unbounded)
    }

    /// Whether `key`, met going up from `start`, is still a child.
    pub fn holds(&self, key: &PathKey) -> bool {
        key.has_parent_part(&self.low.as_bytes()[..self.part_len])
    }

    /// The name in a key this range holds (it follows `part/`).
    pub fn name<'k>(&self, key: &'k PathKey) -> &'k str {
        &key.as_str()[self.part_len + 1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn checkpoint_key(p: &str) -> Vec<u8> {
        // The store's key: parent NUL name, the root empty.
        match crate::path::split(p) {
            None => Vec::new(),
            Some((parent, name)) => [parent.as_bytes(), b"\0", name.as_bytes()].concat(),
        }
    }

    const PATHS: &[&str] = &[
        "/",
        "/a",
        "/a/b",
        "/a/b/c",
        "/a/bb",
        "/a/b0",
        "/a-",
        "/ab",
        "/ab/x",
        "/zookeeper",
        "/zookeeper/quota",
        "/zookeeper/config",
        "/\u{e9}t\u{e9}",
        "/\u{e9}t\u{e9}/x",
        "/x/y/z/w",
        "/x/y-/q",
        "/x/y!/q",
        "/x/y.",
        "/x/y",
        "/x/y/z",
        "/x/y0/z",
        "/x",
    ];

    #[test]
    fn the_order_is_the_checkpoint_key_order() {
        let mut by_key: Vec<&str> = PATHS.to_vec();
        by_key.sort_by_key(|p| checkpoint_key(p));
        let mut by_path: Vec<&str> = PATHS.to_vec();
        by_path.sort_by(|a, b| PathKey::new(a).cmp(PathKey::new(b)));
        assert_eq!(by_path, by_key);
        assert_eq!(by_path[0], "/");
        for a in PATHS {
            for b in PATHS {
                assert_eq!(
                    PathKey::new(a).cmp(PathKey::new(b)),
                    checkpoint_key(a).cmp(&checkpoint_key(b)),
                    "{a} vs {b}"
                );
            }
        }
    }

    /// Paths long enough to be compared 8 bytes at a time, differing
    /// anywhere: the order still equals the checkpoint key order.
    #[test]
    fn long_generated_paths_order_as_checkpoint_keys() {
        let alphabet: &[&str] = &["/", "a", "b", "-", ".", "0", "\u{e9}", "/", "abcdefgh"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut paths: Vec<String> = Vec::new();
        for _ in 0..400 {
            let mut p = String::from("/common/prefix");
            for _ in 0..(next() % 12) {
                p.push_str(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            // A valid path: no empty name, no trailing slash.
            while p.contains("//") {
                p = p.replace("//", "/x/");
            }
            if p.ends_with('/') {
                p.push('z');
            }
            paths.push(p);
        }
        for a in &paths {
            for b in &paths {
                assert_eq!(
                    PathKey::new(a).cmp(PathKey::new(b)),
                    checkpoint_key(a).cmp(&checkpoint_key(b)),
                    "{a} vs {b}"
                );
            }
        }
    }

    /// Short paths are kept inline and long ones boxed; either way a key
    /// gives its path back and orders as that path does.
    #[test]
    fn keys_hold_their_path_inline_or_boxed_and_order_as_paths() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        let edge = "/".to_string() + &"x".repeat(INLINE - 1);
        let over = edge.clone() + "y";
        // A multi-byte character across the inline limit.
        let split = "/".to_string() + &"x".repeat(INLINE - 2) + "\u{e9}";
        let mut paths: Vec<String> = PATHS.iter().map(|p| p.to_string()).collect();
        paths.extend([edge, over, split, "/a/".to_string() + &"b".repeat(40)]);
        for p in &paths {
            for k in [Key::new(p), Key::from_string(p.clone())] {
                assert_eq!(k.as_str(), p);
                assert_eq!(matches!(k.0, Repr::Inline { .. }), p.len() <= INLINE, "{p}");
            }
        }
        for a in &paths {
            for b in &paths {
                let (ka, kb) = (Key::new(a), Key::new(b));
                assert_eq!(
                    ka.cmp(&kb),
                    PathKey::new(a).cmp(PathKey::new(b)),
                    "{a} vs {b}"
                );
                assert_eq!(ka == kb, a == b);
            }
        }
    }

    #[test]
    fn a_range_holds_exactly_the_children_in_name_order() {
        let map: BTreeMap<Key, ()> = PATHS.iter().map(|p| (Key::new(p), ())).collect();
        let children = |parent: &str| -> Vec<&str> {
            let r = ChildRange::new(parent);
            map.range::<PathKey, _>(r.start())
                .take_while(|(k, _)| r.holds(k))
                .map(|(k, _)| {
                    assert_eq!(r.name(k), k.name());
                    r.name(k)
                })
                .collect()
        };
        for parent in PATHS {
            let mut want: Vec<&str> = PATHS
                .iter()
                .filter_map(|p| crate::path::split(p))
                .filter(|(par, _)| par == parent)
                .map(|(_, n)| n)
                .collect();
            want.sort();
            assert_eq!(children(parent), want, "children of {parent}");
        }
        assert_eq!(
            children("/"),
            ["a", "a-", "ab", "x", "zookeeper", "\u{e9}t\u{e9}"]
        );
        assert_eq!(children("/missing"), Vec::<&str>::new());
        // Not a child, though right after one in the order.
        assert!(!ChildRange::new("/a").holds(PathKey::new("/a/b/c")));
        assert!(!ChildRange::new("/").holds(PathKey::new("/a/b")));
    }
}
