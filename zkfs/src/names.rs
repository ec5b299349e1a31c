//! Names: how a path in the mount becomes a znode path, which names are not
//! znodes, and the `NAME@mod,mod` suffix that asks for a create mode.
//!
//! The suffix is parsed only when every word after the last `@` is a known
//! modifier, so an ordinary znode called `user@example` is left alone.

use std::hash::Hasher;

/// The file inside a directory that holds the directory znode's own data.
pub const DATA_FILE: &str = ".data";
/// The short-lived child `mkdir` creates and deletes in the same multi, so the
/// new znode's cversion is non-zero and it reads as a directory everywhere.
pub const MKDIR_MARK: &str = ".zkfs-mkdir";
/// Prefix of the lock directory (a container) next to a locked file.
pub const LOCK_PREFIX: &str = ".zkfs-lock.";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mods {
    pub ephemeral: bool,
    pub sequential: bool,
    pub container: bool,
    pub handle: bool,
    pub ttl_ms: i64,
    pub version: Option<i32>,
}

impl Mods {
    /// Any modifier that makes this a create (everything but `version=`).
    pub fn creates(&self) -> bool {
        self.ephemeral || self.sequential || self.container || self.handle || self.ttl_ms > 0
    }

    /// The CreateMode flags value.
    pub fn flags(&self) -> i32 {
        let eph = self.ephemeral || self.handle;
        match (eph, self.sequential, self.container, self.ttl_ms > 0) {
            (_, _, true, _) => 4,
            (false, s, _, true) => {
                if s {
                    6
                } else {
                    5
                }
            }
            (true, true, _, _) => 3,
            (true, false, _, _) => 1,
            (false, true, _, _) => 2,
            (false, false, _, _) => 0,
        }
    }
}

/// Splits `base@mods`; None when the name carries no (valid) modifier suffix.
pub fn parse_mods(name: &str) -> Option<(&str, Mods)> {
    let at = name.rfind('@')?;
    let (base, rest) = (&name[..at], &name[at + 1..]);
    if rest.is_empty() {
        return None;
    }
    let mut m = Mods::default();
    for word in rest.split(',') {
        match word {
            "ephemeral" => m.ephemeral = true,
            "sequential" => m.sequential = true,
            "container" => m.container = true,
            "handle" => m.handle = true,
            w => {
                if let Some(v) = w.strip_prefix("ttl=") {
                    m.ttl_ms = v.parse().ok().filter(|t: &i64| *t > 0)?;
                } else if let Some(v) = w.strip_prefix("version=") {
                    m.version = Some(v.parse().ok().filter(|t: &i32| *t >= 0)?);
                } else {
                    return None;
                }
            }
        }
    }
    // Contradictions are not modifiers either: the name stays literal.
    let kinds = [m.ephemeral || m.handle, m.container, m.ttl_ms > 0]
        .iter()
        .filter(|x| **x)
        .count();
    if kinds > 1 || (m.version.is_some() && m.creates()) || (m.container && m.sequential) {
        return None;
    }
    // A sequential name may end in '@' stripped to empty ("@sequential" → "").
    Some((base, m))
}

pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// (parent, basename) of a znode path other than "/".
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// A stable inode number for a path: the same on every mount of the tree,
/// so `ls -i`, `find -inum` and tar's hard-link detection agree across machines.
/// The FUSE generation is always 0: a znode re-created under the same name is
/// the same file to the kernel (we read by path anyway), and an open file is
/// never turned into a bad inode because someone else replaced the znode.
pub fn ino_of(key: &str) -> u64 {
    if key == "/" {
        return 1;
    }
    // FNV-1a; 0 and 1 are reserved by FUSE.
    let mut h = Fnv(0xcbf29ce484222325);
    h.write(key.as_bytes());
    let v = h.finish();
    if v < 2 {
        v + 2
    } else {
        v
    }
}

struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// The znode holding the lock queue for `path`.
pub fn lock_dir(path: &str) -> String {
    let (parent, base) = split(path);
    join(parent, &format!("{LOCK_PREFIX}{base}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modifiers_parse_only_when_all_words_are_known() {
        let (b, m) = parse_mods("job-@ephemeral,sequential").unwrap();
        assert_eq!(b, "job-");
        assert!(m.ephemeral && m.sequential);
        assert_eq!(m.flags(), 3);
        assert_eq!(parse_mods("user@example.com"), None);
        assert_eq!(parse_mods("plain"), None);
        assert_eq!(parse_mods("x@ttl=0"), None);
        assert_eq!(parse_mods("x@ephemeral,container"), None);
        assert_eq!(parse_mods("x@version=3").unwrap().1.version, Some(3));
        assert_eq!(parse_mods("x@ttl=5000,sequential").unwrap().1.flags(), 6);
        assert_eq!(parse_mods("x@container").unwrap().1.flags(), 4);
        assert_eq!(parse_mods("x@handle").unwrap().1.flags(), 1);
    }

    #[test]
    fn paths_split_and_join() {
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b"), ("/a", "b"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(lock_dir("/a/f"), "/a/.zkfs-lock.f");
        assert_eq!(ino_of("/"), 1);
        assert_ne!(ino_of("/a"), ino_of("/b"));
    }
}
