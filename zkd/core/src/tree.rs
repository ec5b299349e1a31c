//! The data tree: every znode in memory, with the mutations a transaction can
//! make. No networking, no clock, no disk: the caller passes zxids and times,
//! and reads back which paths changed (to persist them) and which watch events
//! the change fires.
//!
//! Mutations are journaled per transaction so a `multi` whose later op fails can
//! be rolled back exactly; `commit` ends the transaction and hands back the
//! touched paths and events, `rollback` restores the state before `begin`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use zk_proto::jute::{Reader, Result as DecodeResult, Writer};
use zk_proto::records::{Acl, Record, Stat};
use zk_proto::EventType;

use crate::data::Data;
use crate::digest::node_hash;
use crate::index::{ChildRange, Key, PathKey};
use crate::path;
use crate::record::NodeRecord;

/// The stored part of a znode's `Stat`; `dataLength` and `numChildren` are
/// derived from the node itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub pzxid: i64,
}

/// Sized for a million of them: data is two words (`data`), and the
/// children are not in the node but next to it in the tree's ordered map
/// (`DataTree::children`).
#[derive(Debug, Clone)]
pub struct Node {
    pub data: Data,
    pub acl: Arc<Vec<Acl>>,
    pub stat: NodeStat,
    pub child_count: u32,
    /// `node_hash` of the node: set when it enters the tree, by a setData
    /// at once, by any other change at `commit`; the journal saves it with
    /// the node, so `commit` subtracts the old hash without hashing the
    /// old node again and `rollback` restores it. That second hash was
    /// half of the digest's cost (`node_hash` was 6.5% of the samples of
    /// two members of a 3-member ensemble under a multi of setData, `perf`).
    hash: u64,
}

/// Bytes of a node record's stat: four i64 times, three i32 versions,
/// the ephemeral owner and pzxid (i64 each).
const RECORD_STAT: usize = 4 * 8 + 3 * 4 + 2 * 8;

impl Node {
    /// A node without children (they link themselves as they are added).
    pub fn new(data: impl Into<Data>, acl: Arc<Vec<Acl>>, stat: NodeStat) -> Node {
        Node {
            data: data.into(),
            acl,
            stat,
            child_count: 0,
            hash: 0,
        }
    }

    pub fn stat(&self) -> Stat {
        let s = &self.stat;
        Stat {
            czxid: s.czxid,
            mzxid: s.mzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            // The reference stores a count of child creates and reports
            // creates + deletes, derived as 2*creates - children
            // (`DataNode.copyStat`); sequential names use the stored count.
            cversion: s
                .cversion
                .wrapping_mul(2)
                .wrapping_sub(self.child_count as i32),
            aversion: s.aversion,
            ephemeral_owner: client_owner(s.ephemeral_owner),
            data_length: self.data.len() as i32,
            num_children: self.child_count as i32,
            pzxid: s.pzxid,
        }
    }

    /// The persisted form: stat, ACL, data (children are implied by the
    /// children's own records).
    pub fn encode(&self) -> Vec<u8> {
        // Sized once: grown from empty it was reallocated up to 7 times per
        // record (8 bytes doubling to 256 for 100 B of data), and
        // `Node::encode` was 10% of the core's samples on a 3-member
        // ensemble under multi10 of 100 B setData, 16x32 (`perf`).
        let mut w = self.encode_head(4 + self.data.len());
        crate::record::push_data(&mut w, &self.data);
        debug_assert_eq!(w.len(), w.capacity());
        w
    }

    /// `encode`'s bytes before the data's length prefix (stat and ACL),
    /// with room for `room` more.
    fn encode_head(&self, room: usize) -> Vec<u8> {
        let acl: usize = self.acl.iter().map(Acl::encoded_len).sum();
        let mut w = Writer::with_capacity(RECORD_STAT + 4 + acl + room);
        let s = &self.stat;
        w.i64(s.czxid).i64(s.mzxid).i64(s.ctime).i64(s.mtime);
        w.i32(s.version)
            .i32(s.cversion)
            .i32(s.aversion)
            .i64(s.ephemeral_owner)
            .i64(s.pzxid);
        w.i32(self.acl.len() as i32);
        for a in self.acl.iter() {
            a.write(&mut w);
        }
        w.buf
    }

    /// The persisted form on its way to storage: `encode`'s bytes, big
    /// data shared rather than copied.
    pub fn record(&self) -> NodeRecord {
        let Some(data) = self.data.shared() else {
            return NodeRecord::Whole(self.encode());
        };
        NodeRecord::Split {
            head: self.encode_head(0),
            crc: crc32c::crc32c(&data),
            data,
        }
    }

    /// A record's mzxid (from its first bytes: a whole record's or a
    /// split one's head).
    pub fn record_mzxid(bytes: &[u8]) -> Option<i64> {
        Some(i64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?))
    }

    /// A record's mzxid and where its data's length prefix starts (the
    /// stat and ACL before it), for storage that keeps big data apart
    /// from the record; `None` unless the rest is exactly that data.
    pub fn record_head(bytes: &[u8]) -> Option<(i64, usize)> {
        let mzxid = Node::record_mzxid(bytes)?;
        let mut r = Reader::new(bytes.get(RECORD_STAT..)?);
        r.vec(12, Acl::read).ok()?;
        let head = RECORD_STAT + r.position();
        let len = r.i32().ok()?;
        (usize::try_from(len).ok()? == r.remaining()).then_some((mzxid, head))
    }

    pub fn decode(bytes: &[u8]) -> DecodeResult<(NodeStat, Vec<Acl>, Vec<u8>)> {
        let mut r = Reader::new(bytes);
        let stat = NodeStat {
            czxid: r.i64()?,
            mzxid: r.i64()?,
            ctime: r.i64()?,
            mtime: r.i64()?,
            version: r.i32()?,
            cversion: r.i32()?,
            aversion: r.i32()?,
            ephemeral_owner: r.i64()?,
            pzxid: r.i64()?,
        };
        let acl = r.vec(12, Acl::read)?;
        let data = r.buffer()?;
        Ok((stat, acl, data))
    }
}

/// A watch event a change fires, with the ACL that decides who may see it:
/// the node's own (for a deleted node, the ACL it had), or the parent's for
/// NodeChildrenChanged. Connections without READ there are not told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub typ: EventType,
    pub path: String,
    pub acl: Arc<Vec<Acl>>,
}

/// Paths a transaction touches before its journal indexes them by hash.
const JOURNAL_SCAN_MAX: usize = 16;

/// What a node looked like before the current transaction first touched it.
/// Data, ACL, stat and the node's hash (`Node::hash`) as they were.
type Saved = Option<(Data, Arc<Vec<Acl>>, NodeStat, u64)>;

#[derive(Default)]
struct Journal {
    /// Each touched path's place in `saved`, once there are more than
    /// `JOURNAL_SCAN_MAX` of them; below that `saved` is scanned. Most
    /// txns touch one to three paths, and the map's insert (a SipHash of
    /// the path and a copy of it) was 2.2% of a loaded leader's core
    /// thread, `perf`, multi of setData.
    touched: HashMap<String, usize>,
    saved: Vec<(String, Saved)>,
    /// Beside `saved`: the record and hash of the node as this transaction
    /// left it, when the change that left it so had the node at hand (a
    /// setData); `commit` then needs no lookup. Any later change of the
    /// node goes through `save`, which forgets it.
    known: Vec<Option<(NodeRecord, u64)>>,
    events: Vec<Event>,
}

/// The node at `path`, to change, saved in `journal` first (one lookup
/// for both). Free-standing so the tree's other fields stay usable.
fn saved_mut<'n>(
    nodes: &'n mut BTreeMap<Key, Node>,
    journal: &mut Journal,
    path: &str,
) -> Option<&'n mut Node> {
    let node = nodes.get_mut(PathKey::new(path))?;
    journal.save(path, Some(node));
    Some(node)
}

impl Journal {
    /// Keeps what `path` looked like before this transaction first touched
    /// it (`saved` is called before every change); returns its place.
    fn save_with(&mut self, path: &str, saved: impl FnOnce() -> Saved) -> usize {
        let found = if self.touched.is_empty() {
            self.saved.iter().position(|(p, _)| p == path)
        } else {
            self.touched.get(path).copied()
        };
        if let Some(i) = found {
            self.known[i] = None;
            return i;
        }
        let i = self.saved.len();
        self.saved.push((path.to_owned(), saved()));
        self.known.push(None);
        if !self.touched.is_empty() {
            self.touched.insert(path.to_owned(), i);
        } else if self.saved.len() > JOURNAL_SCAN_MAX {
            self.touched = (self.saved.iter().enumerate())
                .map(|(i, (p, _))| (p.clone(), i))
                .collect();
        }
        i
    }

    fn save(&mut self, path: &str, node: Option<&Node>) {
        self.save_with(path, || {
            node.map(|n| (n.data.clone(), n.acl.clone(), n.stat, n.hash))
        });
    }
}

/// What a committed transaction changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Every path whose record changed (created, deleted or updated), with
    /// its record now (`Node::record`; `None`: deleted).
    pub records: Vec<(String, Option<NodeRecord>)>,
    /// Watch events in the order the reference fires them.
    pub events: Vec<Event>,
}

pub struct DataTree {
    /// Ordered by (parent, name), so a node's children are adjacent (see
    /// `index`). Nodes are stored inline: a B-tree never rehashes, so
    /// growing it moves no nodes in bulk (a hash map of inline nodes stalled
    /// the server for a second as it grew past 917,504 of them).
    nodes: BTreeMap<Key, Node>,
    ephemerals: HashMap<i64, BTreeSet<String>>,
    /// Containers and TTL nodes: the only candidates the reaper looks at.
    reapable: BTreeSet<String>,
    /// Paths with a quota (a limits node under /zookeeper/quota).
    pub(crate) quotas: BTreeSet<String>,
    acl_cache: HashMap<Vec<Acl>, Arc<Vec<Acl>>>,
    data_bytes: u64,
    /// Sum of `node_hash` over every node, kept up to date at `commit`, so
    /// replicas at the same zxid can compare trees in O(1).
    digest: u64,
    journal: Journal,
    /// While loading: nodes read back, put in the map all at once by
    /// `link_children` (a B-tree built from sorted input has full leaves;
    /// one filled by inserts in order is about half empty).
    loading: Vec<(Key, Node)>,
}

/// Reserved nodes that can never be deleted (`DataTree.isSpecialPath`).
pub fn is_special_path(p: &str) -> bool {
    matches!(
        p,
        "/" | "/zookeeper" | "/zookeeper/quota" | "/zookeeper/config"
    )
}

impl Default for DataTree {
    fn default() -> Self {
        Self::new()
    }
}

impl DataTree {
    /// A fresh tree as the reference starts one: `/`, `/zookeeper`,
    /// `/zookeeper/quota` and a read-only `/zookeeper/config`, with the same
    /// initial stats (the config node's aversion of -1 is the reference's).
    pub fn new() -> DataTree {
        let mut t = DataTree::empty();
        let open = t.intern_acl(Acl::open_unsafe());
        let read = t.intern_acl(Acl::read_unsafe());
        let mk = |acl: &Arc<Vec<Acl>>, cversion, aversion| {
            let stat = NodeStat {
                cversion,
                aversion,
                ..Default::default()
            };
            Node::new(Vec::new(), acl.clone(), stat)
        };
        t.insert_loaded("/".into(), mk(&open, 0, 0));
        t.insert_loaded("/zookeeper".into(), mk(&open, 0, 0));
        t.insert_loaded("/zookeeper/quota".into(), mk(&open, 0, 0));
        t.insert_loaded("/zookeeper/config".into(), mk(&read, 0, -1));
        t.link_children();
        t
    }

    /// A tree with no nodes at all, to be filled by `insert_loaded` from disk.
    pub fn empty() -> DataTree {
        DataTree {
            nodes: BTreeMap::new(),
            ephemerals: HashMap::new(),
            reapable: BTreeSet::new(),
            quotas: BTreeSet::new(),
            acl_cache: HashMap::new(),
            data_bytes: 0,
            digest: 0,
            journal: Journal::default(),
            loading: Vec::new(),
        }
    }

    /// Room for `n` more nodes, so loading a big tree does not regrow the
    /// map step by step.
    pub fn reserve(&mut self, n: usize) {
        self.loading.reserve(n);
    }

    /// Adds a node read back from storage, in any order; it is in the tree
    /// once `link_children` has run.
    pub fn insert_loaded(&mut self, path: String, mut node: Node) {
        self.data_bytes += node.data.len() as u64 + path.len() as u64;
        node.hash = node_hash(&path, &node.data, &node.acl, &node.stat);
        self.digest = self.digest.wrapping_add(node.hash);
        self.index_owner(&path, node.stat.ephemeral_owner);
        self.loading.push((Key::from_string(path), node));
    }

    /// Puts the loaded nodes in the map and counts every node's children;
    /// returns paths whose parent is missing (a damaged store), which the
    /// caller must treat as corruption.
    pub fn link_children(&mut self) -> Vec<String> {
        let loaded = std::mem::take(&mut self.loading);
        if self.nodes.is_empty() {
            // Sorted already when read from the store (its key order is
            // this order); `from_iter` then only checks that and builds.
            self.nodes = loaded.into_iter().collect();
        } else {
            self.nodes.extend(loaded);
        }
        // Children are runs of equal parent part; count each run and look
        // its parent up once.
        let mut orphans = Vec::new();
        let mut counts: Vec<(String, u32)> = Vec::new();
        let mut run: Option<(&str, bool)> = None;
        for k in self.nodes.keys() {
            let Some((parent, _)) = path::split(k.as_str()) else {
                continue;
            };
            match run {
                Some((p, _)) if p == parent => {}
                _ => {
                    let exists = self.nodes.contains_key(PathKey::new(parent));
                    if exists {
                        counts.push((parent.to_owned(), 0));
                    }
                    run = Some((parent, exists));
                }
            }
            match run {
                Some((_, true)) => counts.last_mut().expect("pushed above").1 += 1,
                _ => orphans.push(k.as_str().to_owned()),
            }
        }
        for (parent, n) in counts {
            if let Some(p) = self.nodes.get_mut(PathKey::new(&parent)) {
                p.child_count = n;
            }
        }
        let limits: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| crate::quota::quota_target(p.as_str(), crate::quota::LIMIT_NODE).is_some())
            .map(|p| p.as_str().to_owned())
            .collect();
        for p in limits {
            self.reindex_quota(&p);
        }
        orphans
    }

    /// Rebuilds the ordered map with full leaves, as `link_children`
    /// builds it; costs a copy of every slot, for after a bulk of inserts.
    pub fn compact(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        self.nodes = nodes.into_iter().collect();
    }

    /// Sets a node's data without touching its stat (quota stats nodes).
    pub(crate) fn replace_data_in_place(&mut self, p: &str, data: Vec<u8>) {
        self.save(p);
        if let Some(n) = self.nodes.get_mut(PathKey::new(p)) {
            self.data_bytes = self.data_bytes - n.data.len() as u64 + data.len() as u64;
            n.data = data.into();
        }
    }

    pub fn intern_acl(&mut self, acl: Vec<Acl>) -> Arc<Vec<Acl>> {
        if let Some(a) = self.acl_cache.get(&acl) {
            return a.clone();
        }
        let a = Arc::new(acl.clone());
        self.acl_cache.insert(acl, a.clone());
        a
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(PathKey::new(path))
    }

    /// The names of `path`'s children, in name (byte) order; none for a
    /// missing node.
    pub fn children<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a str> + 'a {
        let count = self.get(path).map_or(0, |n| n.child_count);
        self.children_of(path, count)
    }

    /// The names of the children of `path`, whose node (already looked
    /// up by the caller) says it has `count`.
    pub fn children_of<'a>(&'a self, path: &str, count: u32) -> impl Iterator<Item = &'a str> + 'a {
        // The count says where the run ends: no per-key check (that cost
        // ~15 ns a child, a third more time to list 10,000 of them).
        let r = ChildRange::new(path);
        let range = self.nodes.range::<PathKey, _>(r.start());
        range.take(count as usize).map(move |(k, _)| {
            debug_assert!(r.holds(k), "{k:?}: child count out of step");
            r.name(k)
        })
    }

    /// The number of znodes, counted as the reference counts them (its map
    /// holds the root twice, under "" and "/", and `srvr`/`mntr` report that).
    pub fn node_count_reported(&self) -> usize {
        self.nodes.len() + 1
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes of data plus path names, as `zk_approximate_data_size` reports.
    pub fn approximate_data_size(&self) -> u64 {
        self.data_bytes
    }

    pub fn ephemerals_of(&self, session: i64) -> Vec<String> {
        self.ephemerals
            .get(&session)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(|s| s.len()).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }

    // ---- journaled mutations -------------------------------------------

    fn save(&mut self, path: &str) {
        let node = self.nodes.get(PathKey::new(path));
        self.journal.save(path, node);
    }

    /// Creates `path` under an existing parent; returns its stat. The
    /// caller (request preparation) has checked every precondition.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        path: &str,
        data: impl Into<Data>,
        acl: Vec<Acl>,
        ephemeral_owner: i64,
        parent_cversion: i32,
        zxid: i64,
        time: i64,
    ) -> Stat {
        let (parent, _) = path::split(path).expect("create of the root");
        let data = data.into();
        let data_len = data.len();
        let acl = self.intern_acl(acl);
        let p = saved_mut(&mut self.nodes, &mut self.journal, parent)
            .expect("create under a missing parent");
        // The caller checked that there is no node at `path`.
        self.journal.save(path, None);
        p.child_count += 1;
        p.stat.cversion = parent_cversion;
        p.stat.pzxid = zxid;
        self.data_bytes += data.len() as u64 + path.len() as u64;
        let stat = NodeStat {
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            pzxid: zxid,
            ephemeral_owner,
            ..Default::default()
        };
        let parent_acl = p.acl.clone();
        self.index_owner(path, ephemeral_owner);
        self.journal.events.push(Event {
            typ: EventType::NodeCreated,
            path: path.to_owned(),
            acl: acl.clone(),
        });
        self.journal.events.push(Event {
            typ: EventType::NodeChildrenChanged,
            path: parent.to_owned(),
            acl: parent_acl,
        });
        let node = Node::new(data, acl, stat);
        let reply = node.stat();
        self.nodes.insert(Key::new(path), node);
        self.quota_after_create(path, data_len);
        reply
    }

    pub fn delete(&mut self, path: &str, zxid: i64) {
        let (parent, _) = path::split(path).expect("delete of the root");
        let Node {
            data,
            acl,
            stat,
            hash,
            ..
        } = self
            .nodes
            .remove(PathKey::new(path))
            .expect("delete of a missing node");
        let deleted_len = data.len();
        self.data_bytes -= deleted_len as u64 + path.len() as u64;
        // The journal keeps the node for a rollback: its data moved there,
        // not copied (a 10 KiB copy per delete of a big node).
        self.journal
            .save_with(path, || Some((data, acl.clone(), stat, hash)));
        self.unindex_ephemeral(path, stat.ephemeral_owner);
        let mut parent_acl = Arc::new(Vec::new());
        if let Some(p) = saved_mut(&mut self.nodes, &mut self.journal, parent) {
            p.child_count -= 1;
            // A replayed delete must not move pzxid backwards past a later create.
            if zxid > p.stat.pzxid {
                p.stat.pzxid = zxid;
            }
            parent_acl = p.acl.clone();
        }
        self.journal.events.push(Event {
            typ: EventType::NodeDeleted,
            path: path.to_owned(),
            acl,
        });
        self.journal.events.push(Event {
            typ: EventType::NodeChildrenChanged,
            path: parent.to_owned(),
            acl: parent_acl,
        });
        self.quota_after_delete(path, deleted_len);
    }

    /// setData of the node at `path`, if there is one (`None` if not),
    /// with one lookup.
    pub fn set_data(
        &mut self,
        path: &str,
        data: impl Into<Data>,
        version: i32,
        zxid: i64,
        time: i64,
    ) -> Option<Stat> {
        let set = |_: &Node| Ok::<_, std::convert::Infallible>(version);
        self.set_data_checked(path, data, zxid, time, set)
            .map(|r| r.unwrap_or_else(|never| match never {}))
    }

    /// setData with one lookup of the node: `check` sees it as it is (its
    /// ACL, its version) and returns the new version or refuses, leaving
    /// it untouched. `None`: there is no node at `path`. Lookups are most
    /// of a setData's cost on a big tree (a lookup for the check, one for
    /// the change: 15% of the server's CPU in a multi of setData on 640,000
    /// nodes, `perf record`).
    pub fn set_data_checked<E>(
        &mut self,
        path: &str,
        data: impl Into<Data>,
        zxid: i64,
        time: i64,
        check: impl FnOnce(&Node) -> Result<i32, E>,
    ) -> Option<Result<Stat, E>> {
        let n = self.nodes.get_mut(PathKey::new(path))?;
        let version = match check(n) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let data = data.into();
        let (old_len, new_len) = (n.data.len(), data.len());
        self.data_bytes = self.data_bytes - old_len as u64 + new_len as u64;
        // The journal keeps the old data for a rollback: moved there, not
        // copied, when this txn first touches the node.
        let old = std::mem::replace(&mut n.data, data);
        let at = self
            .journal
            .save_with(path, || Some((old, n.acl.clone(), n.stat, n.hash)));
        n.stat.version = version;
        n.stat.mzxid = zxid;
        n.stat.mtime = time;
        n.hash = node_hash(path, &n.data, &n.acl, &n.stat);
        self.journal.known[at] = Some((n.record(), n.hash));
        let stat = n.stat();
        let acl = n.acl.clone();
        self.journal.events.push(Event {
            typ: EventType::NodeDataChanged,
            path: path.to_owned(),
            acl,
        });
        self.quota_after_set(path, old_len, new_len);
        Some(Ok(stat))
    }

    pub fn set_acl(&mut self, path: &str, acl: Vec<Acl>, aversion: i32) -> Stat {
        let acl = self.intern_acl(acl);
        let n =
            saved_mut(&mut self.nodes, &mut self.journal, path).expect("setACL of a missing node");
        n.acl = acl;
        n.stat.aversion = aversion;
        n.stat()
    }

    fn index_owner(&mut self, path: &str, owner: i64) {
        match owner_kind(owner) {
            Owner::Session(id) => {
                self.ephemerals
                    .entry(id)
                    .or_default()
                    .insert(path.to_owned());
            }
            Owner::Container | Owner::Ttl(_) => {
                self.reapable.insert(path.to_owned());
            }
            Owner::Persistent => {}
        }
    }

    fn unindex_ephemeral(&mut self, path: &str, owner: i64) {
        match owner_kind(owner) {
            Owner::Session(id) => {
                if let Some(set) = self.ephemerals.get_mut(&id) {
                    set.remove(path);
                    if set.is_empty() {
                        self.ephemerals.remove(&id);
                    }
                }
            }
            Owner::Container | Owner::Ttl(_) => {
                self.reapable.remove(path);
            }
            Owner::Persistent => {}
        }
    }

    /// Containers that had children and have none left, and TTL nodes
    /// without children unmodified for longer than their TTL, in path order
    /// (`ContainerManager.getCandidates`).
    pub fn reap_candidates(&self, now_wall_ms: i64) -> Vec<String> {
        self.reapable
            .iter()
            .filter(|p| {
                let Some(n) = self.nodes.get(PathKey::new(p)) else {
                    return false;
                };
                if n.child_count > 0 {
                    return false;
                }
                match owner_kind(n.stat.ephemeral_owner) {
                    Owner::Container => n.stat.cversion > 0,
                    Owner::Ttl(ttl) => now_wall_ms - n.stat.mtime > ttl,
                    _ => false,
                }
            })
            .cloned()
            .collect()
    }

    /// Starts a transaction (clears the journal).
    pub fn begin(&mut self) {
        self.journal = Journal::default();
    }

    /// The tree's digest: equal trees have equal digests.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The digest computed from scratch (what `digest` must always equal).
    pub fn digest_recomputed(&self) -> u64 {
        self.nodes.iter().fold(0u64, |d, (p, n)| {
            d.wrapping_add(node_hash(p.as_str(), &n.data, &n.acl, &n.stat))
        })
    }

    /// Ends the transaction, keeping its changes.
    pub fn commit(&mut self) -> Changes {
        let j = std::mem::take(&mut self.journal);
        let mut records = Vec::with_capacity(j.saved.len());
        for ((path, saved), known) in j.saved.into_iter().zip(j.known) {
            if let Some((.., hash)) = &saved {
                self.digest = self.digest.wrapping_sub(*hash);
            }
            let now = match known {
                // The node's hash was set with it.
                Some((record, hash)) => {
                    self.digest = self.digest.wrapping_add(hash);
                    Some(record)
                }
                None => self.nodes.get_mut(PathKey::new(&path)).map(|n| {
                    n.hash = node_hash(&path, &n.data, &n.acl, &n.stat);
                    self.digest = self.digest.wrapping_add(n.hash);
                    n.record()
                }),
            };
            records.push((path, now));
        }
        Changes {
            records,
            events: j.events,
        }
    }

    /// Undoes everything since `begin`, newest first.
    pub fn rollback(&mut self) {
        let j = std::mem::take(&mut self.journal);
        let mut touched = Vec::new();
        for (path, saved) in j.saved.into_iter().rev() {
            touched.push(path.clone());
            let parent = path::split(&path).map(|(p, _)| p.to_owned());
            match saved {
                None => {
                    if let Some(node) = self.nodes.remove(PathKey::new(&path)) {
                        self.data_bytes -= node.data.len() as u64 + path.len() as u64;
                        self.unindex_ephemeral(&path, node.stat.ephemeral_owner);
                        if let Some(parent) = &parent {
                            if let Some(p) = self.nodes.get_mut(PathKey::new(parent)) {
                                p.child_count -= 1;
                            }
                        }
                    }
                }
                Some((data, acl, stat, hash)) => {
                    if let Some(n) = self.nodes.get_mut(PathKey::new(&path)) {
                        self.data_bytes = self.data_bytes - n.data.len() as u64 + data.len() as u64;
                        let old_owner = n.stat.ephemeral_owner;
                        n.data = data;
                        n.acl = acl;
                        n.stat = stat;
                        n.hash = hash;
                        self.unindex_ephemeral(&path, old_owner);
                    } else {
                        self.data_bytes += data.len() as u64 + path.len() as u64;
                        // Restored newest first, so a child deleted before
                        // its parent in this transaction is back already
                        // (its parent was missing to count it): count the
                        // children that are there.
                        let r = ChildRange::new(&path);
                        let child_count = self
                            .nodes
                            .range::<PathKey, _>(r.start())
                            .take_while(|(k, _)| r.holds(k))
                            .count() as u32;
                        self.nodes.insert(
                            Key::new(&path),
                            Node {
                                data,
                                acl,
                                stat,
                                child_count,
                                hash,
                            },
                        );
                        if let Some(parent) = &parent {
                            if let Some(p) = self.nodes.get_mut(PathKey::new(parent)) {
                                p.child_count += 1;
                            }
                        }
                    }
                    self.index_owner(&path, stat.ephemeral_owner);
                }
            }
        }
        for p in touched {
            self.reindex_quota(&p);
        }
    }
}

/// `ephemeralOwner` of a container node (`EphemeralType.CONTAINER`).
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// The largest TTL, in ms, that fits the owner encoding (40 bits).
pub const TTL_MAX_MS: i64 = (1 << 40) - 1;

/// What a node's `ephemeralOwner` says about it. Containers and TTL nodes
/// borrow the field: containers hold exactly 0x8000000000000000, TTL nodes
/// 0xFF in the top byte and the TTL below; anything else non-zero is a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Persistent,
    Session(i64),
    Container,
    Ttl(i64),
}

pub fn owner_kind(owner: i64) -> Owner {
    if owner == 0 {
        Owner::Persistent
    } else if owner == CONTAINER_OWNER {
        Owner::Container
    } else if (owner as u64) >> 56 == 0xFF {
        Owner::Ttl(owner & TTL_MAX_MS)
    } else {
        Owner::Session(owner)
    }
}

pub fn ttl_owner(ttl_ms: i64) -> i64 {
    (0xFFu64 << 56) as i64 | (ttl_ms & TTL_MAX_MS)
}

pub fn is_session_owner(owner: i64) -> bool {
    matches!(owner_kind(owner), Owner::Session(_))
}

/// The `ephemeralOwner` clients see: the reference shows 0 for containers
/// and TTL nodes (`DataTree.getClientEphemeralOwner`).
pub fn client_owner(owner: i64) -> i64 {
    match owner_kind(owner) {
        Owner::Session(id) => id,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(paths: &[&str]) -> DataTree {
        let mut t = DataTree::new();
        for (i, p) in paths.iter().enumerate() {
            let parent = path::split(p).unwrap().0;
            let cv = t.get(parent).unwrap().stat.cversion + 1;
            t.begin();
            t.create(
                p,
                vec![i as u8],
                Acl::open_unsafe(),
                0,
                cv,
                10 + i as i64,
                1000,
            );
            t.commit();
        }
        t
    }

    #[test]
    fn create_updates_parent_and_reports_events() {
        let mut t = tree_with(&["/a"]);
        t.begin();
        t.create("/a/b", b"x".to_vec(), Acl::open_unsafe(), 7, 1, 20, 5);
        let ch = t.commit();
        let paths: Vec<&str> = ch.records.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/a", "/a/b"]);
        assert_eq!(
            (ch.events[0].typ, ch.events[0].path.as_str()),
            (EventType::NodeCreated, "/a/b")
        );
        assert_eq!(
            (ch.events[1].typ, ch.events[1].path.as_str()),
            (EventType::NodeChildrenChanged, "/a")
        );
        let a = t.get("/a").unwrap().stat();
        assert_eq!((a.cversion, a.pzxid, a.num_children), (1, 20, 1));
        assert_eq!(t.ephemerals_of(7), vec!["/a/b".to_string()]);
    }

    #[test]
    fn rollback_restores_everything() {
        let mut t = tree_with(&["/a", "/a/b"]);
        let before: Vec<(String, Stat, Vec<u8>)> = {
            let mut v: Vec<_> = t
                .iter()
                .map(|(p, n)| (p.to_string(), n.stat(), n.data.to_vec()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let size = t.approximate_data_size();
        t.begin();
        t.delete("/a/b", 30);
        t.create("/a/b", b"new".to_vec(), Acl::open_unsafe(), 9, 5, 30, 7);
        t.create("/a/b/c", vec![], Acl::open_unsafe(), 9, 1, 30, 7);
        t.set_data("/a", b"zz".to_vec(), 1, 30, 7);
        // A second change of the same node: the journal keeps the first
        // saved state, not the one in between.
        t.set_data("/a", b"yyy".to_vec(), 2, 30, 7);
        // A refused check changes nothing.
        let refused = t.set_data_checked("/a/b/c", b"no".to_vec(), 30, 7, |_| Err("no"));
        assert_eq!(refused, Some(Err("no")));
        assert_eq!(t.get("/a/b/c").unwrap().data.len(), 0);
        assert!(t
            .set_data_checked("/nope", vec![], 30, 7, |_| Ok::<_, ()>(1))
            .is_none());
        t.create("/x", vec![], Acl::open_unsafe(), 0, 3, 30, 7);
        t.rollback();
        let mut after: Vec<_> = t
            .iter()
            .map(|(p, n)| (p.to_string(), n.stat(), n.data.to_vec()))
            .collect();
        after.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(before, after);
        assert_eq!(size, t.approximate_data_size());
        assert!(t.ephemerals_of(9).is_empty());
    }

    /// A setData hands `commit` the node's record; a later change of the
    /// same node in the transaction must replace it.
    #[test]
    fn commit_reports_each_node_as_the_transaction_left_it() {
        let mut t = tree_with(&["/a", "/b"]);
        t.begin();
        t.set_data("/a", b"1".to_vec(), 1, 30, 7);
        t.set_acl("/a", Acl::read_unsafe(), 1);
        t.set_data("/b", b"2".to_vec(), 1, 30, 7);
        t.delete("/b", 30);
        let ch = t.commit();
        let rec = |p: &str| {
            let r = ch.records.iter().find(|(q, _)| q == p).unwrap().1.clone();
            r.map(NodeRecord::into_vec)
        };
        assert_eq!(rec("/a"), Some(t.get("/a").unwrap().encode()));
        assert_eq!(rec("/b"), None);
        assert_eq!(t.digest(), t.digest_recomputed());
        t.begin();
        t.set_data("/a", b"3".to_vec(), 2, 31, 8);
        let ch = t.commit();
        let rec = ch.records[0].1.clone().map(NodeRecord::into_vec);
        assert_eq!(rec, Some(t.get("/a").unwrap().encode()));
        assert_eq!(t.digest(), t.digest_recomputed());
    }

    /// Big data reaches storage shared with the tree, not copied, and
    /// small data copied into a whole record; either way the record is
    /// the node's encoding.
    #[test]
    fn a_record_shares_big_data_with_the_tree() {
        let mut t = tree_with(&["/a", "/b"]);
        t.begin();
        t.set_data("/a", vec![7; crate::data::SHARE_MIN], 1, 30, 7);
        t.set_data("/b", vec![7; crate::data::SHARE_MIN - 1], 1, 30, 7);
        let ch = t.commit();
        let rec = |p: &str| {
            ch.records
                .iter()
                .find(|(q, _)| q == p)
                .unwrap()
                .1
                .clone()
                .unwrap()
        };
        let a = t.get("/a").unwrap();
        match rec("/a") {
            NodeRecord::Split { data, crc, .. } => {
                assert_eq!(data.as_ptr(), a.data.as_ptr());
                assert_eq!(crc, crc32c::crc32c(&a.data));
            }
            r => panic!("a whole record of big data: {r:?}"),
        }
        assert_eq!(rec("/a").into_vec(), a.encode());
        assert!(matches!(rec("/b"), NodeRecord::Whole(_)));
        assert_eq!(rec("/b").into_vec(), t.get("/b").unwrap().encode());
    }

    /// Each node's cached hash and the tree's digest stay those of a
    /// recomputation through repeated changes of one node, a transaction
    /// touching more paths than the journal scans, a rollback, and a
    /// delete and create of one path in one transaction.
    #[test]
    fn the_digest_and_node_hashes_follow_every_change() {
        let check = |t: &DataTree, step: &str| {
            assert_eq!(t.digest(), t.digest_recomputed(), "{step}");
            for (p, n) in t.iter() {
                assert_eq!(
                    n.hash,
                    node_hash(p, &n.data, &n.acl, &n.stat),
                    "{step}: {p}"
                );
            }
        };
        let mut t = tree_with(&["/a", "/b"]);
        check(&t, "loaded");
        t.begin();
        t.set_data("/a", b"1".to_vec(), 1, 30, 7);
        t.set_data("/a", b"22".to_vec(), 2, 30, 7);
        t.commit();
        check(&t, "two sets");
        t.begin();
        let n = JOURNAL_SCAN_MAX as i32 + 4;
        for i in 0..n {
            let p = format!("/b/n{i}");
            t.create(&p, vec![i as u8], Acl::open_unsafe(), 0, i + 1, 31, 8);
            t.set_data(&p, vec![1, i as u8], 1, 31, 8);
        }
        t.set_data("/b/n0", b"again".to_vec(), 2, 31, 8);
        let ch = t.commit();
        assert_eq!(ch.records.len(), n as usize + 1, "each path once, and /b");
        check(&t, "many paths");
        t.begin();
        t.set_data("/a", b"rolled".to_vec(), 3, 32, 9);
        t.delete("/b/n1", 32);
        t.rollback();
        check(&t, "rollback");
        t.begin();
        t.set_data("/a", b"kept".to_vec(), 3, 33, 9);
        t.commit();
        check(&t, "a set after the rollback");
        t.begin();
        t.delete("/b/n2", 34);
        t.create("/b/n2", b"re".to_vec(), Acl::open_unsafe(), 0, n + 1, 34, 9);
        t.commit();
        check(&t, "delete and create");
    }

    #[test]
    fn rollback_of_a_child_then_its_parent_deleted_relinks_both() {
        let mut t = tree_with(&["/a", "/a/b", "/a/c"]);
        let digest = t.digest();
        t.begin();
        t.delete("/a/b", 30);
        t.delete("/a/c", 30);
        t.delete("/a", 30);
        t.rollback();
        assert_eq!(t.get("/a").unwrap().stat().num_children, 2);
        assert_eq!(t.children("/a").collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(t.get("/").unwrap().child_count, 2, "/a and /zookeeper");
        assert_eq!(t.digest_recomputed(), digest);
    }

    #[test]
    fn children_are_listed_in_name_order_and_loading_counts_them() {
        let t = tree_with(&["/b", "/a", "/a/y", "/a/x", "/a/x/deep", "/a-"]);
        assert_eq!(
            t.children("/").collect::<Vec<_>>(),
            ["a", "a-", "b", "zookeeper"]
        );
        assert_eq!(t.children("/a").collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(t.children("/a/y").count(), 0);
        assert_eq!(t.children("/nope").count(), 0);
        // Read back in reverse order: counts and lists come out the same.
        let mut loaded = DataTree::empty();
        let mut all: Vec<(String, Node)> =
            t.iter().map(|(p, n)| (p.to_owned(), n.clone())).collect();
        all.reverse();
        for (p, mut n) in all {
            n.child_count = 0;
            loaded.insert_loaded(p, n);
        }
        assert!(loaded.link_children().is_empty());
        for (p, n) in t.iter() {
            assert_eq!(loaded.get(p).unwrap().child_count, n.child_count, "{p}");
            assert!(loaded.children(p).eq(t.children(p)), "{p}");
        }
        let mut orphaned = DataTree::empty();
        orphaned.insert_loaded("/".into(), t.get("/").unwrap().clone());
        orphaned.insert_loaded("/x/y".into(), t.get("/a/x").unwrap().clone());
        assert_eq!(orphaned.link_children(), ["/x/y"]);
    }

    #[test]
    fn delete_counts_in_reported_cversion_but_not_in_stored() {
        let mut t = tree_with(&["/a", "/a/b"]);
        t.begin();
        t.delete("/a/b", 40);
        t.commit();
        let a = t.get("/a").unwrap();
        assert_eq!(
            (a.stat().cversion, a.stat().pzxid, a.stat().num_children),
            (2, 40, 0)
        );
        assert_eq!(a.stat.cversion, 1);
        let fresh = DataTree::new();
        assert_eq!(fresh.get("/").unwrap().stat().cversion, -1);
        assert_eq!(fresh.get("/zookeeper").unwrap().stat().cversion, -2);
    }

    #[test]
    fn node_record_round_trips() {
        let t = tree_with(&["/a"]);
        let n = t.get("/a").unwrap();
        let (stat, acl, data) = Node::decode(&n.encode()).unwrap();
        assert_eq!(stat, n.stat);
        assert_eq!(&acl, n.acl.as_ref());
        assert_eq!(data[..], n.data[..]);
    }
}
