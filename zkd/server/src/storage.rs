//! RocksDB: the durable tree, the sessions and the transaction log.
//!
//! Column families:
//! - `nodes`:    key `parent \0 name` (the root's key is empty) -> node record.
//!   All children of a node share the prefix `parent \0`, so
//!   listing them is one prefix scan, never a scan of the tree.
//! - `sessions`: session id (8 bytes, big-endian) -> timeout and password.
//! - `log`:      zxid (8 bytes, big-endian) -> txn record. One log, ordered by
//!   zxid, so it can be replayed from any point and truncated at
//!   either end (ZAB's DIFF and TRUNC need exactly that).
//! - `default`:  `last_zxid` -> the zxid of the last txn in the tree.
//! - In an ensemble, `zab_log` holds ZAB's log (zxid -> proposal) after
//!   `zab_log_base`: older txns live only in the tree, which is the
//!   snapshot a lagging learner is sent. `default` also holds
//!   `accepted_epoch`, `current_epoch` and `zab_log_base`. `last_zxid` is
//!   then the last *delivered* txn: the tree never holds a txn a quorum had
//!   not logged.
//!
//! Every batch of txns is written as one RocksDB `WriteBatch` with `sync`: the
//! log records, the nodes and sessions they changed and `last_zxid` land
//! together or not at all, so after a crash the tree is exactly the state
//! after some txn, never in between.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use zkd_core::server::{decode_session, Persist, RestoredSession};
use zkd_core::tree::{DataTree, Node};

const CF_NODES: &str = "nodes";
const CF_SESSIONS: &str = "sessions";
const CF_LOG: &str = "log";
const CF_ZAB_LOG: &str = "zab_log";
const KEY_LAST_ZXID: &[u8] = b"last_zxid";
const KEY_ACCEPTED_EPOCH: &[u8] = b"accepted_epoch";
const KEY_CURRENT_EPOCH: &[u8] = b"current_epoch";
const KEY_LOG_BASE: &[u8] = b"zab_log_base";

/// How many txns of log to keep behind the tree.
pub const LOG_RETAIN_TXNS: i64 = 100_000;

pub struct Store {
    db: DB,
    log_floor: i64,
}

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// What was on disk at start-up.
pub struct Loaded {
    pub tree: DataTree,
    pub last_zxid: i64,
    pub sessions: Vec<RestoredSession>,
}

/// An 8-byte big-endian key or value (zxids, session ids, epochs);
/// anything else is damage, named by `what`.
fn be8(b: &[u8], what: &str) -> Result<[u8; 8], StoreError> {
    b.try_into()
        .map_err(|_| StoreError(format!("{what} is damaged")))
}

pub fn node_key(path: &str) -> Vec<u8> {
    match zkd_core::path::split(path) {
        None => Vec::new(),
        Some((parent, name)) => {
            let mut k = Vec::with_capacity(parent.len() + 1 + name.len());
            k.extend_from_slice(parent.as_bytes());
            k.push(0);
            k.extend_from_slice(name.as_bytes());
            k
        }
    }
}

pub fn key_path(key: &[u8]) -> Option<String> {
    if key.is_empty() {
        return Some("/".to_owned());
    }
    let i = key.iter().position(|&b| b == 0)?;
    let parent = std::str::from_utf8(&key[..i]).ok()?;
    let name = std::str::from_utf8(&key[i + 1..]).ok()?;
    Some(zkd_core::path::join(parent, name))
}

/// Builds a tree from stored node records (key as in `node_key`, record as
/// in `Node::encode`), one at a time, checked: every key and record
/// decodes, every node has its parent, the root exists.
pub struct TreeBuilder(DataTree);

impl TreeBuilder {
    /// `expected`: about how many nodes will come (room is made up front).
    pub fn new(expected: usize) -> TreeBuilder {
        let mut tree = DataTree::empty();
        tree.reserve(expected);
        TreeBuilder(tree)
    }

    pub fn add(&mut self, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
        let path = key_path(k).ok_or_else(|| StoreError(format!("damaged node key {k:?}")))?;
        let (stat, acl, data) = Node::decode(v)
            .map_err(|e| StoreError(format!("damaged node record for {path}: {e}")))?;
        let acl = self.0.intern_acl(acl);
        self.0.insert_loaded(
            path,
            Node {
                data,
                acl,
                stat,
                children: Default::default(),
            },
        );
        Ok(())
    }

    pub fn finish(mut self) -> Result<DataTree, StoreError> {
        let orphans = self.0.link_children();
        if !orphans.is_empty() || self.0.get("/").is_none() {
            return Err(StoreError(format!(
                "damaged tree: nodes without a parent: {orphans:?}"
            )));
        }
        Ok(self.0)
    }
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Every acknowledged batch was fsynced, so only the last WAL record
        // can be torn (a crash mid-write, never acknowledged): drop that one.
        // Damage anywhere else means acknowledged data is gone; refuse to
        // open rather than serve what is left (RocksDB's default would
        // silently stop at the damage).
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        let cfs = [CF_NODES, CF_SESSIONS, CF_LOG, CF_ZAB_LOG]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Store { db, log_floor: 0 })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// Reads the tree and sessions back. A store with log records but no
    /// tree state is refused rather than started empty (ZOOKEEPER-2325).
    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        let last = self.db.get(KEY_LAST_ZXID)?;
        let Some(last) = last else {
            let has_log = self
                .db
                .iterator_cf(self.cf(CF_LOG), rocksdb::IteratorMode::Start)
                .next()
                .is_some();
            let has_nodes = self
                .db
                .iterator_cf(self.cf(CF_NODES), rocksdb::IteratorMode::Start)
                .next()
                .is_some();
            if has_log || has_nodes {
                return Err(StoreError(
                    "the data directory holds log or tree records but no last_zxid: refusing to start over it".into(),
                ));
            }
            // A new store: write the initial tree durably before serving.
            let tree = DataTree::new();
            let mut batch = WriteBatch::default();
            for (p, n) in tree.iter() {
                batch.put_cf(self.cf(CF_NODES), node_key(p), n.encode());
            }
            batch.put(KEY_LAST_ZXID, 0i64.to_be_bytes());
            self.write(batch)?;
            return Ok(Loaded {
                tree,
                last_zxid: 0,
                sessions: Vec::new(),
            });
        };
        let last_zxid = i64::from_be_bytes(be8(&last, "the last_zxid record")?);
        let expected = self
            .db
            .property_int_value_cf(self.cf(CF_NODES), "rocksdb.estimate-num-keys")?
            .unwrap_or(0);
        let mut tree = TreeBuilder::new(expected.min(1 << 28) as usize);
        for item in self
            .db
            .iterator_cf(self.cf(CF_NODES), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            tree.add(&k, &v)?;
        }
        let tree = tree.finish()?;
        let mut sessions = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SESSIONS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let id = i64::from_be_bytes(be8(&k, "a session key")?);
            sessions.push(
                decode_session(id, &v)
                    .ok_or_else(|| StoreError(format!("damaged session 0x{id:x}")))?,
            );
        }
        self.log_floor = match self
            .db
            .iterator_cf(self.cf(CF_LOG), rocksdb::IteratorMode::Start)
            .next()
        {
            Some(item) => {
                let (k, _) = item?;
                i64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]))
            }
            None => last_zxid,
        };
        Ok(Loaded {
            tree,
            last_zxid,
            sessions,
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        // Durable before acknowledged: fsync the WAL on every batch.
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Makes a group of persists durable in one synced write.
    pub fn commit(&mut self, group: &[Persist]) -> Result<i64, StoreError> {
        let mut batch = WriteBatch::default();
        let mut last = 0;
        for p in group {
            for (zxid, rec) in &p.log {
                batch.put_cf(self.cf(CF_LOG), zxid.to_be_bytes(), rec);
            }
            for (path, v) in &p.nodes {
                match v {
                    Some(v) => batch.put_cf(self.cf(CF_NODES), node_key(path), v),
                    None => batch.delete_cf(self.cf(CF_NODES), node_key(path)),
                }
            }
            for (id, v) in &p.sessions {
                match v {
                    Some(v) => batch.put_cf(self.cf(CF_SESSIONS), id.to_be_bytes(), v),
                    None => batch.delete_cf(self.cf(CF_SESSIONS), id.to_be_bytes()),
                }
            }
            last = last.max(p.last_zxid);
        }
        batch.put(KEY_LAST_ZXID, last.to_be_bytes());
        // Trim the log in steps so the range delete is rare.
        if last - self.log_floor > LOG_RETAIN_TXNS + LOG_RETAIN_TXNS / 10 {
            let floor = last - LOG_RETAIN_TXNS;
            batch.delete_range_cf(self.cf(CF_LOG), 0i64.to_be_bytes(), floor.to_be_bytes());
            self.log_floor = floor;
        }
        self.write(batch)?;
        Ok(last)
    }

    fn get_u64(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.db.get(key)? {
            None => Ok(0),
            Some(v) => Ok(u64::from_be_bytes(be8(
                &v,
                &format!("the {} record", String::from_utf8_lossy(key)),
            )?)),
        }
    }

    /// Has this store ever been part of an ensemble?
    pub fn is_ensemble(&self) -> Result<bool, StoreError> {
        Ok(self.get_u64(KEY_ACCEPTED_EPOCH)? > 0
            || self
                .db
                .iterator_cf(self.cf(CF_ZAB_LOG), rocksdb::IteratorMode::Start)
                .next()
                .is_some())
    }

    /// ZAB's durable state: epochs, the log after its base; `applied` is
    /// the tree's `last_zxid`.
    pub fn load_zab(&self, applied: i64) -> Result<zkd_zab::peer::Durable, StoreError> {
        let base = self.get_u64(KEY_LOG_BASE)?;
        let mut log = Vec::new();
        let start = (base + 1).to_be_bytes();
        for item in self.db.iterator_cf(
            self.cf(CF_ZAB_LOG),
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            let zxid = u64::from_be_bytes(be8(&k, "a ZAB log key")?);
            log.push(zkd_zab::types::Txn {
                zxid,
                data: v.to_vec(),
            });
        }
        if (applied as u64) < base {
            return Err(StoreError(format!(
                "the tree is at 0x{applied:x} but the ZAB log was compacted to 0x{base:x}"
            )));
        }
        Ok(zkd_zab::peer::Durable {
            accepted_epoch: self.get_u64(KEY_ACCEPTED_EPOCH)?,
            current_epoch: self.get_u64(KEY_CURRENT_EPOCH)?,
            log,
            applied: applied as u64,
            base,
        })
    }

    /// The applied state (tree and sessions at `last_zxid`), for a SNAP.
    /// Read from one RocksDB snapshot, so it is one zxid's state even if
    /// it is read while writes go on.
    pub fn applied_state(&self) -> Result<(u64, Vec<u8>), StoreError> {
        let snap = self.db.snapshot();
        let zxid = match snap.get(KEY_LAST_ZXID)? {
            Some(v) => u64::from_be_bytes(be8(&v, "the last_zxid record")?),
            None => 0,
        };
        let mut w = crate::ensemble::state::StateWriter::new(zxid);
        for item in snap.iterator_cf(self.cf(CF_NODES), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            w.node(&k, &v);
        }
        for item in snap.iterator_cf(self.cf(CF_SESSIONS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            w.session(i64::from_be_bytes(be8(&k, "a session key")?), &v);
        }
        Ok((zxid, w.finish()))
    }

    /// Writes tree changes and ZAB's persists, in order, as one batch;
    /// `sync` makes it durable before returning.
    pub fn commit_ensemble(
        &mut self,
        tree: &[Persist],
        zab: &[zkd_zab::peer::Persist],
        sync: bool,
    ) -> Result<(), StoreError> {
        use zkd_zab::peer::Persist as Z;
        let mut batch = WriteBatch::default();
        for p in tree {
            for (path, v) in &p.nodes {
                match v {
                    Some(v) => batch.put_cf(self.cf(CF_NODES), node_key(path), v),
                    None => batch.delete_cf(self.cf(CF_NODES), node_key(path)),
                }
            }
            for (id, v) in &p.sessions {
                match v {
                    Some(v) => batch.put_cf(self.cf(CF_SESSIONS), id.to_be_bytes(), v),
                    None => batch.delete_cf(self.cf(CF_SESSIONS), id.to_be_bytes()),
                }
            }
        }
        for p in zab {
            match p {
                Z::AcceptedEpoch(e) => batch.put(KEY_ACCEPTED_EPOCH, e.to_be_bytes()),
                Z::CurrentEpoch(e) => batch.put(KEY_CURRENT_EPOCH, e.to_be_bytes()),
                Z::Append(txns) => {
                    for t in txns {
                        batch.put_cf(self.cf(CF_ZAB_LOG), t.zxid.to_be_bytes(), &t.data);
                    }
                }
                Z::Applied(z) => batch.put(KEY_LAST_ZXID, (*z as i64).to_be_bytes()),
                Z::Compact(base) => {
                    batch.delete_range_cf(
                        self.cf(CF_ZAB_LOG),
                        0u64.to_be_bytes(),
                        (base + 1).to_be_bytes(),
                    );
                    batch.put(KEY_LOG_BASE, base.to_be_bytes());
                }
                Z::Snapshot { upto, state, log } => {
                    // Checked by the driver before it got here; a failure
                    // now is damage in memory: stop before writing.
                    let rec = crate::ensemble::state::records(state).map_err(StoreError)?;
                    let all = |b: &mut WriteBatch, cf: &rocksdb::ColumnFamily, hi: &[u8]| {
                        b.delete_range_cf(cf, [].as_slice(), hi);
                        b.delete_cf(cf, hi);
                    };
                    // Node keys are UTF-8 paths: none starts with 0xff.
                    all(&mut batch, self.cf(CF_NODES), &[0xff]);
                    all(&mut batch, self.cf(CF_SESSIONS), &[0xff; 8]);
                    all(&mut batch, self.cf(CF_ZAB_LOG), &[0xff; 8]);
                    for (k, v) in rec.nodes {
                        batch.put_cf(self.cf(CF_NODES), k, v);
                    }
                    for (id, v) in rec.sessions {
                        batch.put_cf(self.cf(CF_SESSIONS), id.to_be_bytes(), v);
                    }
                    for t in log {
                        batch.put_cf(self.cf(CF_ZAB_LOG), t.zxid.to_be_bytes(), &t.data);
                    }
                    batch.put(KEY_LAST_ZXID, (*upto as i64).to_be_bytes());
                    batch.put(KEY_LOG_BASE, upto.to_be_bytes());
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Log records from `from` (inclusive), for replay and inspection.
    #[cfg(test)]
    pub fn log_from(&self, from: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let start = from.to_be_bytes();
        for item in self.db.iterator_cf(
            self.cf(CF_LOG),
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            let z = i64::from_be_bytes(be8(&k, "a log key")?);
            out.push((z, v.to_vec()));
        }
        Ok(out)
    }

    /// The children of `path` as stored: one prefix scan.
    #[cfg(test)]
    pub fn children(&self, path: &str) -> Result<Vec<String>, StoreError> {
        let mut prefix = path.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_NODES),
            rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zk_proto::records::Acl;
    use zkd_core::txn::{Txn, TxnHeader};

    #[test]
    fn keys_round_trip_and_group_children() {
        for p in ["/", "/a", "/a/b", "/zookeeper/quota"] {
            assert_eq!(key_path(&node_key(p)).unwrap(), p);
        }
        assert!(node_key("/a/b").starts_with(b"/a\0"));
        assert!(!node_key("/ab").starts_with(b"/a\0"));
    }

    #[test]
    fn commit_then_reload() {
        let dir = std::env::temp_dir().join(format!("zkd-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = Store::open(&dir).unwrap();
            let mut l = s.load().unwrap();
            l.tree.begin();
            l.tree
                .create("/a", b"v".to_vec(), Acl::open_unsafe(), 0, 0, 1, 5);
            l.tree
                .create("/a/b", vec![], Acl::open_unsafe(), 0, 1, 1, 5);
            let ch = l.tree.commit();
            let hdr = TxnHeader {
                session: 0,
                cxid: 0,
                zxid: 1,
                time: 5,
            };
            let p = Persist {
                last_zxid: 1,
                log: vec![(1, Txn::encode_entry(&hdr, &Txn::Error(0)))],
                nodes: ch
                    .paths
                    .iter()
                    .map(|p| (p.clone(), l.tree.get(p).map(|n| n.encode())))
                    .collect(),
                sessions: vec![(7, Some(zkd_core::server::encode_session(4000, &[1; 16])))],
            };
            assert_eq!(s.commit(&[p]).unwrap(), 1);
            assert_eq!(s.children("/a").unwrap(), vec!["b".to_string()]);
        }
        let mut s = Store::open(&dir).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.last_zxid, 1);
        assert_eq!(l.tree.get("/a").unwrap().data, b"v");
        assert_eq!(l.tree.get("/a").unwrap().children.len(), 1);
        assert_eq!(l.tree.get("/").unwrap().children.len(), 2);
        assert_eq!(l.sessions.len(), 1);
        assert_eq!(s.log_from(0).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
