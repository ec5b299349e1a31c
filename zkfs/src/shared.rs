//! State shared by the FUSE request loop, the event reflector and lock waiters:
//! the inode table, the echoes of our own writes, and pending reflections.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType};
use zk_proto::records::{Acl, Stat};

use crate::client::Client;
use crate::locks::Locks;
use crate::options::Options;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

impl Kind {
    /// The one rule: a znode is a directory when it is the root, a container,
    /// or has ever had a child (cversion > 0); otherwise a file. cversion never
    /// goes down, so a directory stays a directory when its children go away;
    /// `mkdir` makes its znode's cversion non-zero in the same multi that creates it.
    pub fn of(path: &str, st: &Stat) -> Kind {
        if path == "/" || st.num_children > 0 || st.cversion > 0 || st.ephemeral_owner == i64::MIN {
            Kind::Dir
        } else {
            Kind::File
        }
    }

    pub fn file_type(self) -> FileType {
        match self {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
        }
    }
}

/// One inode the kernel knows about.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The znode path (chroot-relative) this inode stands for.
    pub path: String,
    pub kind: Kind,
    /// The `.data` file of a directory znode.
    pub data_file: bool,
    /// `NAME@version=N`: writes are conditional on this version.
    pub version: Option<i32>,
    pub lookups: u64,
}

impl Entry {
    pub fn new(path: String, kind: Kind) -> Entry {
        Entry {
            path,
            kind,
            data_file: false,
            version: None,
            lookups: 0,
        }
    }
}

#[derive(Default)]
pub struct Table {
    pub by_ino: HashMap<u64, Entry>,
    pub by_path: HashMap<String, u64>,
}

impl Table {
    /// Key of a path in `by_path`; the `.data` file gets its own key.
    pub fn key(path: &str, data_file: bool) -> String {
        if data_file {
            format!("{path}\0data")
        } else {
            path.to_string()
        }
    }

    pub fn remember(&mut self, ino: u64, e: Entry) {
        let key = Self::key(&e.path, e.data_file);
        let lookups = self.by_ino.get(&ino).map(|x| x.lookups).unwrap_or(0);
        if e.version.is_none() {
            self.by_path.insert(key, ino);
        }
        self.by_ino.insert(
            ino,
            Entry {
                lookups: lookups + 1,
                ..e
            },
        );
    }

    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == 1 {
            return;
        }
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.lookups = e.lookups.saturating_sub(n);
            if e.lookups == 0 {
                let e = self.by_ino.remove(&ino).unwrap();
                let key = Self::key(&e.path, e.data_file);
                if self.by_path.get(&key) == Some(&ino) {
                    self.by_path.remove(&key);
                }
            }
        }
    }
}

/// What the reflector is about to do through the mount, so the request loop
/// answers its requests from this instead of from the server.
#[derive(Debug, Clone)]
pub enum Reflect {
    Create,
    Delete(u64, Kind),
}

pub struct Shared {
    pub zk: Client,
    pub opts: Options,
    pub table: Mutex<Table>,
    /// (event type, path) of our own writes whose watch event must not be
    /// reflected again (the kernel already raised inotify for the local call).
    pub echoes: Mutex<Vec<(i32, String, bool)>>,
    pub reflecting: Mutex<HashMap<String, Reflect>>,
    /// Thread id of the reflector: its requests are recognised by this.
    pub reflector_tid: Mutex<u32>,
    pub locks: Locks,
    /// The digest ids this mount authenticates as (for permission bits).
    pub my_ids: Vec<(String, String)>,
    /// czxids of containers this mount made with mkdir: a container that has
    /// never had a child looks like any empty znode to clients (ZooKeeper
    /// reports ephemeralOwner 0 for it), and marking it with a child would get
    /// it reaped, so only its creator knows it is a directory until it has one.
    pub made_dirs: Mutex<std::collections::HashSet<i64>>,
    /// Stat and ACL of entries a directory listing just fetched, each used by
    /// at most one lookup within `LISTED_FRESH` (the one `ls -l` or `find`
    /// makes right after), and dropped when a watch event names the path.
    pub listed: Mutex<HashMap<String, Listed>>,
}

/// A listed entry's ACL and Stat, and when they were fetched.
pub type Listed = (Vec<Acl>, Stat, std::time::Instant);

const LISTED_FRESH: Duration = Duration::from_secs(2);

impl Shared {
    pub fn remember_listed(&self, path: String, acl: Vec<Acl>, st: Stat) {
        let mut m = self.listed.lock().unwrap();
        if m.len() > 100_000 {
            m.clear();
        }
        m.insert(path, (acl, st, std::time::Instant::now()));
    }

    pub fn take_listed(&self, path: &str) -> Option<(Vec<Acl>, Stat)> {
        let (acl, st, at) = self.listed.lock().unwrap().remove(path)?;
        (at.elapsed() < LISTED_FRESH).then_some((acl, st))
    }

    pub fn forget_listed(&self, path: &str) {
        self.listed.lock().unwrap().remove(path);
    }

    pub fn kind(&self, path: &str, st: &Stat) -> Kind {
        match Kind::of(path, st) {
            Kind::File if self.made_dirs.lock().unwrap().contains(&st.czxid) => Kind::Dir,
            k => k,
        }
    }

    pub fn expect_echo(&self, typ: i32, path: &str) {
        self.echoes
            .lock()
            .unwrap()
            .push((typ, path.to_string(), false));
    }

    /// For sequential creates: any `prefix` + 10 digits matches.
    pub fn expect_echo_prefix(&self, typ: i32, prefix: &str) {
        self.echoes
            .lock()
            .unwrap()
            .push((typ, prefix.to_string(), true));
    }

    pub fn unexpect_echo(&self, typ: i32, path: &str) {
        let mut v = self.echoes.lock().unwrap();
        if let Some(i) = v.iter().position(|(t, p, _)| *t == typ && p == path) {
            v.remove(i);
        }
    }

    pub fn consume_echo(&self, typ: i32, path: &str) -> bool {
        let mut v = self.echoes.lock().unwrap();
        let hit = v.iter().position(|(t, p, prefix)| {
            *t == typ
                && if *prefix {
                    path.strip_prefix(p.as_str())
                        .is_some_and(|r| r.len() == 10 && r.bytes().all(|b| b.is_ascii_digit()))
                } else {
                    p == path
                }
        });
        if let Some(i) = hit {
            v.remove(i);
            true
        } else {
            // Bound the list: echoes of writes whose events never came (no READ
            // permission, connection loss) must not pile up.
            if v.len() > 4096 {
                v.drain(..2048);
            }
            false
        }
    }

    pub fn is_reflector(&self, pid: u32) -> bool {
        pid == *self.reflector_tid.lock().unwrap()
    }

    pub fn entry(&self, ino: u64) -> Option<Entry> {
        self.table.lock().unwrap().by_ino.get(&ino).cloned()
    }

    /// True when no ACL entry can grant `perm` to this mount: every entry is of
    /// a scheme we can judge (world, digest) and none matches.
    /// Anything else (sasl, x509, a super user) is left to the server.
    pub fn surely_denied(&self, acl: &[Acl], perm: i32) -> bool {
        if self.my_ids.iter().any(|(_, id)| id.starts_with("super:")) {
            return false;
        }
        acl.iter().all(|a| {
            let judged = matches!(a.id.scheme.as_str(), "world" | "digest");
            judged && (a.perms & perm == 0 || !self.matches(a))
        })
    }

    fn matches(&self, a: &Acl) -> bool {
        match a.id.scheme.as_str() {
            "world" => a.id.id == "anyone",
            "digest" => self
                .my_ids
                .iter()
                .any(|(s, id)| s == "digest" && *id == a.id.id),
            "ip" => a.id.id.starts_with("127."),
            _ => false,
        }
    }

    /// Permission bits of a znode for this mount's identity, from its ACL.
    pub fn perm(&self, kind: Kind, acl: &[Acl]) -> u16 {
        use zk_proto::codes::perms::*;
        let mut p = 0;
        for a in acl {
            if self.matches(a) {
                p |= a.perms;
            }
        }
        let mut mode = 0u16;
        match kind {
            Kind::File => {
                if p & READ != 0 {
                    mode |= 0o444;
                }
                if p & WRITE != 0 {
                    mode |= 0o222;
                }
            }
            Kind::Dir => {
                if p & READ != 0 {
                    mode |= 0o555;
                }
                if p & (CREATE | DELETE) != 0 {
                    mode |= 0o222;
                }
            }
        }
        if self.opts.read_only {
            mode &= !0o222;
        }
        mode & !(self.opts.umask as u16)
    }

    pub fn attr(&self, ino: u64, kind: Kind, st: &Stat, perm: u16, size: Option<u64>) -> FileAttr {
        let t = |ms: i64| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
        let size = size.unwrap_or(st.data_length.max(0) as u64);
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: t(st.mtime),
            mtime: t(st.mtime),
            ctime: t(st.mtime),
            crtime: t(st.ctime),
            kind: kind.file_type(),
            perm,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            uid: self.opts.uid,
            gid: self.opts.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes for something that exists only in this mount so far (a file
    /// created but not yet closed).
    pub fn local_attr(&self, ino: u64, size: u64) -> FileAttr {
        let now = SystemTime::now();
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::RegularFile,
            perm: 0o666 & !(self.opts.umask as u16),
            nlink: 1,
            uid: self.opts.uid,
            gid: self.opts.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The largest data a write may carry for `path`: the frame (header, path,
    /// data, version) must fit the server's jute.maxbuffer, or the server would
    /// drop the connection instead of answering.
    pub fn max_data(&self, path: &str) -> usize {
        self.opts
            .max_frame
            .saturating_sub(self.zk.full(path).len() + 64)
    }
}
