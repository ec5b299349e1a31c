//! RocksDB holds the tree; the transaction log (`txnlog`) holds the txns.
//!
//! Every txn is made durable once, in the log (one `fdatasync` per group).
//! The tree's records are then staged (`staged`: each node's last record,
//! written in one batch when enough is held or a flush is due) and written
//! to RocksDB *without* RocksDB's WAL:
//! RocksDB is a checkpoint that reaches the disk when its memtable is
//! flushed, and what a crash loses of it the log redoes at start-up. This is
//! ZooKeeper's own design (txn log + snapshot) with an incremental snapshot.
//!
//! Column family `nodes` is the checkpoint, all in one family so that every
//! flush is one consistent state (RocksDB 7.8 cannot flush several families
//! atomically on request):
//! - node records under `parent \0 name` (the root's key is empty), so the
//!   children of a node share a prefix and listing them is one prefix scan;
//! - sessions under `0xFE` + id (8 bytes, big-endian);
//! - `0xFF last_zxid`: the zxid of the last txn in the checkpoint.
//!
//! Node keys are UTF-8 paths, so they sort before both prefixes. A node
//! record whose data is 4 KiB or more refers to that data in the log that
//! made it durable instead of holding it (`valueref`).
//!
//! The `default` family holds what is written rarely and must be durable
//! at once, through RocksDB's WAL with `sync`: ZAB's `accepted_epoch`,
//! `current_epoch`, `zab_log_base` (txns at or below it live only in the
//! checkpoint) and `zab_log_gen` (which generation of the ZAB log is
//! current).
//!
//! Logs, under dataLogDir: `zkd.txnlog` (standalone: txn entries) and
//! `zkd.zablog` (ensemble: ZAB proposals).
//!
//! The rules that keep a crash from losing or mixing anything:
//! 1. The log is synced before the tree records of its txns are written,
//!    so a checkpoint is never ahead of the durable log.
//! 2. Log files are freed, and `zab_log_base` raised, only after a flush of
//!    the checkpoint that covers them has completed; a file is freed only
//!    once no record refers into it and no read of the state for a SNAP
//!    runs (it may resolve references of an older state), and a reference
//!    is made only to a txn after the checkpoint's zxid (so never into a
//!    file already freed).
//! 3. A learner installing a snapshot writes the snapshot's log as a new
//!    generation first, then the state and the generation number in one
//!    synced RocksDB batch, and only then frees the old generation.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{ColumnFamilyDescriptor, FlushOptions, Options, WriteBatch, WriteOptions, DB};

use zkd_core::record::NodeRecord;
use zkd_core::server::{decode_session, Persist, RestoredSession};
use zkd_core::tree::{DataTree, Node};
use zkd_core::txn::Txn;

use crate::awake::Awake;
use crate::blobgc::BlobGc;
use crate::staged::Staged;
use crate::txnlog::{LogReader, TxnLog};
use crate::valueref::{self, Log, Ref, Refs};

const CF_NODES: &str = "nodes";
/// Families of earlier versions (sessions and logs lived in RocksDB);
/// opened so such a store opens, and emptied into the new places.
const CF_OLD_SESSIONS: &str = "sessions";
const CF_OLD_LOG: &str = "log";
const CF_OLD_ZAB_LOG: &str = "zab_log";
const SESSION_PREFIX: u8 = 0xFE;
const META_LAST_ZXID: &[u8] = b"\xfflast_zxid";
const KEY_OLD_LAST_ZXID: &[u8] = b"last_zxid";
const KEY_ACCEPTED_EPOCH: &[u8] = b"accepted_epoch";
const KEY_CURRENT_EPOCH: &[u8] = b"current_epoch";
const KEY_LOG_BASE: &[u8] = b"zab_log_base";
const KEY_LOG_GEN: &[u8] = b"zab_log_gen";

/// Level-0 files (sorted runs, in universal compaction) at which RocksDB
/// slows writes down.
const L0_SLOWDOWN_TRIGGER: i32 = 40;

/// Sorted runs at which universal compaction merges some (RocksDB's
/// default is 4). See where it is set.
const L0_COMPACTION_TRIGGER: i32 = 8;

/// The most disk a RocksDB WAL file reserves (`max_total_wal_size`). See
/// where it is set.
const WAL_RESERVE_MAX: u64 = 1 << 20;

/// Memtables the `default` family may have. Its few synced records
/// (epochs, the log's base) fill none, but RocksDB switches its memtable
/// at each checkpoint flush `start_flush` asks for and when the WAL
/// passes `max_total_wal_size`, and those flushes queue behind the
/// checkpoint's. At RocksDB's 2, a learner that had installed a snapshot
/// of 1,000,000 znodes (a 219 MB memtable, ~3 s to flush) then stopped
/// in its next write, the NEWLEADER epoch ("[default] Stopping writes
/// because we have 2 immutable memtables"), and served only once that
/// flush ended. A follower of a 3-member loopback ensemble holding that
/// many, its data directory wiped, from its start to a client reading the
/// last znode through it: 7.8-9.1 s (5 runs) at 2, 4.6 and 5.2 s at 8
/// (ZooKeeper on the same day 4.2 and 4.8 s); `bench-scale.py` at 8: 3.72
/// s, ZooKeeper 4.13 s in the same run.
const DEFAULT_CF_MEMTABLES: i32 = 8;

/// Readahead of a whole scan of the checkpoint (`whole_scan`).
const WHOLE_SCAN_READAHEAD: usize = 2 << 20;

/// How often (at most) the store looks at its blob garbage.
const STEER_BLOB_GC_EVERY: Duration = Duration::from_secs(1);

pub const TXNLOG_DIR: &str = "zkd.txnlog";
pub const ZABLOG_DIR: &str = "zkd.zablog";

/// How often an idle storage thread looks at an unfinished flush (see
/// `Store::idle`): a wake-up per look while one is running (a flush takes
/// from ~0.1 s to seconds), none once it is done.
const MAINTAIN_WHILE_IDLE: Duration = Duration::from_millis(200);

/// How many bytes of records `staged` may hold before they are written
/// whatever else happens; otherwise they are written when a flush is
/// asked for (the log rolled) or something reads RocksDB. All of them go
/// in one batch (the checkpoint must stay one txn's state), so this bounds
/// the pause that write makes on the storage thread as well as the memory.
const STAGED_MAX_BYTES: usize = 8 << 20;

/// Files a log may hold before the data still referred to in its oldest
/// one is moved into the checkpoint (`valueref`): data overwritten before
/// then is never written again. Costs up to this many 64 MiB files on
/// disk per log.
const HOLD_LOG_FILES: usize = 8;

/// The share of the latest records with big data that must have rewritten
/// a node written lately (`staged::Recent`) for new ones to be references.
const BIG_REWRITES_FOR_REFS: f32 = 0.5;

/// How long the storage thread must have had no write before it moves
/// all data still referred to in closed log files (`Store::idle_move`).
const MOVE_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Bytes of data moved into the checkpoint per call of `maintain` (one
/// per storage job): a piece of a file at a time, not a stall of the
/// storage thread for a whole file's worth.
const MOVE_PIECE_BYTES: usize = 1 << 20;

/// What an idle storage thread does next (`Store::idle`).
#[derive(Debug, PartialEq)]
pub enum Idle {
    /// A piece was done and more is left: call again unless a job came.
    More,
    /// Nothing is left: wait for a job.
    Done,
    /// Nothing now: wait for a job, or this long, then call again.
    After(Duration),
}

pub struct Store {
    /// Shared only with a leader's background read of its state
    /// (`read_state_in_background`).
    db: Arc<DB>,
    /// Standalone txns.
    txlog: TxnLog,
    /// ZAB's proposals.
    zablog: TxnLog,
    /// Read at open, handed out once: standalone txns after the checkpoint
    /// (replayed by `load`) and ZAB's log after its base (`load_zab`).
    replay: Vec<(u64, Vec<u8>)>,
    zab_records: Vec<zkd_zab::types::Txn>,
    /// The checkpoint's zxid as last written (not necessarily flushed).
    written_zxid: i64,
    /// Tree records of synced groups not written to RocksDB yet (`staged`).
    staged: Staged,
    /// A flush was asked for when the checkpoint was at this zxid, and
    /// each log (`Log` order) had no record referring into it at or
    /// below these zxids (`held_below`; the flush makes that durable).
    flushing: Option<(i64, [u64; 2])>,
    /// ZAB compacted its log through this zxid; raised on disk after a
    /// flush covers it (rule 2).
    pending_base: Option<u64>,
    /// ZAB's base on disk: its log's files through it are freed once no
    /// record refers into them (`free_logs`).
    zab_free: u64,
    /// The checkpoint's zxid as of the last flush that completed.
    flushed: i64,
    /// Data being moved out of a log file (`start_moving`).
    moving: Option<Moving>,
    /// A move ended: a flush would free its file.
    moved: bool,
    /// The checkpoint's records that refer into a log, as in RocksDB
    /// (staged records not yet written are not in it).
    refs: Refs,
    /// Of records with big data, how many lately rewrote a node written
    /// lately: references are made while most do (see `stage`).
    big_rewrites: crate::staged::Recent,
    /// When tree records were last staged (`idle_move`).
    last_write: Instant,
    /// Whether blob garbage collection runs now (see `blobgc`).
    blob_gc: BlobGc,
    /// When `blob_gc` was last steered.
    blob_gc_steered: Instant,
    /// Keeps the CPU from idling during the log syncs clients wait for
    /// (`syncIdleSpin`; see `awake`).
    awake: Option<Awake>,
    /// A learner's snapshot already turned into its checkpoint write
    /// (`prepare_install`), with the state it was made from.
    prepared: Option<(u64, Arc<Vec<u8>>, WriteBatch)>,
    /// Background reads of the state running now: while any does, no log
    /// file is freed, as what it read may refer into any of them.
    reading: Arc<AtomicUsize>,
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

impl From<crate::txnlog::LogError> for StoreError {
    fn from(e: crate::txnlog::LogError) -> Self {
        StoreError(e.0)
    }
}

/// The last txn ZAB reports as applied among `zab`'s persists.
fn applied(zab: &[zkd_zab::peer::Persist]) -> Option<i64> {
    zab.iter().rev().find_map(|p| match p {
        zkd_zab::peer::Persist::Applied(z) => Some(*z as i64),
        _ => None,
    })
}

/// Groups of up to this many records are synced under `awake` (when
/// there is one). A small group means few requests in flight, so the CPU
/// is likely to go idle during the sync; in big groups the helper only
/// took CPU from the threads serving them (standalone 16x32, 2 runs each,
/// helper on for every sync: 100-byte setData 3-5%, create 2-7% and delete
/// 7-13% fewer ops/s).
const AWAKE_GROUP_MAX: usize = 4;

/// `log` synced after `records` appends, under `awake` when the group is
/// small.
fn sync_log(awake: &mut Option<Awake>, log: &mut TxnLog, records: usize) -> Result<(), StoreError> {
    match awake {
        Some(a) if records <= AWAKE_GROUP_MAX => a.during(records == 1, || log.sync())?,
        _ => log.sync()?,
    }
    Ok(())
}

fn session_key(id: i64) -> [u8; 9] {
    let mut k = [SESSION_PREFIX; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A write that reaches the disk only with the next memtable flush.
fn unlogged() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    wo
}

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

fn read_u64(db: &DB, key: &[u8]) -> Result<u64, StoreError> {
    match db.get(key)? {
        None => Ok(0),
        Some(v) => Ok(u64::from_be_bytes(be8(
            &v,
            &format!("the {} record", String::from_utf8_lossy(key)),
        )?)),
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

/// Of records in order (lists of `(key, value)`), the last one of each
/// key, latest first.
fn last_of_each<'a, K: Eq + std::hash::Hash + 'a, V: 'a>(
    lists: impl DoubleEndedIterator<Item = &'a [(K, V)]>,
) -> impl Iterator<Item = &'a (K, V)> {
    let mut seen = HashSet::new();
    lists
        .rev()
        .flat_map(|l| l.iter().rev())
        .filter(move |(k, _)| seen.insert(k))
}

/// Tree records into a batch: a node's or session's record, or its
/// delete; `refs` follows the node records.
fn put_records<'a>(
    batch: &mut WriteBatch,
    db: &DB,
    refs: &mut Refs,
    nodes: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    sessions: impl Iterator<Item = (i64, Option<&'a [u8]>)>,
) {
    let cf = db.cf_handle(CF_NODES).expect("created at open");
    for (path, v) in nodes {
        let k = node_key(path);
        refs.note(&k, v);
        match v {
            Some(v) => batch.put_cf(cf, k, v),
            None => batch.delete_cf(cf, k),
        }
    }
    for (id, v) in sessions {
        match v {
            Some(v) => batch.put_cf(cf, session_key(id), v),
            None => batch.delete_cf(cf, session_key(id)),
        }
    }
}

/// A node's key and record.
type KeyedRecord = (Vec<u8>, Vec<u8>);

/// Whether node record `v` refers to `log` at `zxid`.
fn refers(v: &[u8], log: Log, zxid: u64) -> bool {
    matches!(valueref::parse(v), Some(Ok(r)) if r.log == log && r.zxid == zxid)
}

/// Data being moved out of a log file into the checkpoint.
struct Moving {
    log: Log,
    /// The file's last zxid.
    through: u64,
    /// Node keys that referred into the file when the move began, and
    /// their zxids; moved in this order from `next` on.
    entries: Vec<(Vec<u8>, u64)>,
    next: usize,
    /// The log records they refer to.
    records: HashMap<u64, Vec<u8>>,
    moved: usize,
}

/// A node's path and the reference its record holds.
fn parse_ref<'a>(k: &[u8], v: &'a [u8]) -> Result<(String, Ref<'a>), StoreError> {
    let path = key_path(k).ok_or_else(|| StoreError(format!("damaged node key {k:?}")))?;
    match valueref::parse(v) {
        Some(Ok(r)) => Ok((path, r)),
        _ => Err(StoreError(format!("damaged data reference of {path}"))),
    }
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
        self.0.insert_loaded(path, Node::new(data, acl, stat));
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
    /// Opens the checkpoint in `dir` and the logs in `log_dir` (dataLogDir).
    pub fn open(dir: &Path, log_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // What goes through the WAL is synced, so only its last record can
        // be torn (never acknowledged): drop that one. Damage anywhere else
        // means acknowledged data is gone; refuse to open.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        // RocksDB starts a WAL file for each memtable and, at its first
        // record (here a synced put of a few bytes, such as the log base),
        // reserves 1.1 write buffers (70 MiB) with fallocate; closing it
        // truncates the file to its bytes. On a file system mounted with
        // `discard` each such truncate sent a 70 MiB discard to the disk,
        // about every half second per member under multi10 1x1 10 KiB on
        // the loopback ensemble (perf: ftruncate to 42 bytes, then
        // ext4_discard_blocks of 18,022 blocks). This caps the reservation
        // (RocksDB reserves at most this), and only synced writes, rare
        // here, ever make the WAL this big (a learner's snapshot install
        // does; RocksDB then flushes, as it would soon anyway). Fresh
        // loopback ensembles, 3 alternations of 5 s, medians, ops/s, before
        // -> after: multi10 1x1 10 KiB 1,182 -> 1,214 (p99 2,231-2,259 ->
        // 2,046-2,202 µs), create 16x32 10 KiB 11.1k -> 12.1k, setData
        // 1x1 3,058 -> 3,346, multi10 16x32 19.3k -> 21.0k. Measured again
        // on another day (4 alternations of 4 s, medians, with / without):
        // setData 1x1 2,660 / 2,608, delete 1x1 2,353 / 2,266, create 1x1
        // 10 KiB 1,621 / 1,675, all within the runs' spread; the discards
        // are what it removes for certain.
        opts.set_max_total_wal_size(WAL_RESERVE_MAX);
        let mut names = vec![CF_NODES.to_string()];
        for n in DB::list_cf(&opts, dir).unwrap_or_default() {
            if n != "default" && !names.contains(&n) {
                names.push(n);
            }
        }
        // The checkpoint is written and flushed; it is read only at start-up
        // and when a learner is sent a snapshot (a vector memtable then
        // sorts a copy). A vector memtable (append, sorted once when
        // flushed) instead of a skiplist (a search per put) takes the
        // inserts off the thread that syncs the log.
        opts.set_allow_concurrent_memtable_write(false);
        // Checkpoint files are written back to disk a MiB at a time while
        // they are written, not all at their end: a burst of writeback
        // (a flush of 64 MB of 10 KiB nodes) made the log's fdatasync
        // wait behind it. A/B, standalone, 16x32 10 KiB, 3 alternations:
        // delete 37.7k/39.3k/31.9k -> 41.7k/43.3k/32.8k ops/s, create
        // 16.7k/15.8k/16.7k -> 16.8k/16.2k/18.8k.
        opts.set_bytes_per_sync(1 << 20);
        let cfs = names.iter().map(|n| {
            let mut o = Options::default();
            if n == CF_NODES {
                o.set_memtable_factory(rocksdb::MemtableFactory::Vector);
                // The checkpoint is rewritten by compaction, on the cores
                // that serve clients: tiered (universal) compaction rewrites
                // each record a few times instead of once per level, and
                // LZ4 costs less CPU than Snappy. Either DB layout opens
                // with either style (a level is one sorted run) and every
                // block records its codec: checked by hand, 107,842 10 KiB
                // nodes written by the leveled+Snappy zkd read back by this
                // one, and 209,382 back by that one. Two A/Bs (Snappy vs
                // LZ4, then leveled vs universal), standalone, one server
                // through 16x32 10 KiB create, set, create, set, multi10,
                // then mix, delete, get, 2 alternations each, ops/s:
                //   Snappy+leveled -> LZ4+leveled -> LZ4+universal
                //   2nd create 14.0k/13.2k -> 20.1k/22.1k -> 25.2k/26.6k
                //   mix        50.6k/48.7k -> 50.6k/46.4k -> 80.0k/62.3k
                //   delete     59.7k/64.0k -> 51.7k/70.6k -> 96.3k/87.5k
                //   get        67.3k/61.1k -> 72.4k/84.4k -> 103k/103k
                // (no compression at all sped reads as much but slowed
                // creates 10-30%: the flushes then write 10 KiB a node).
                o.set_compression_type(rocksdb::DBCompressionType::Lz4);
                o.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
                // Room for a second full memtable while one is flushed: with
                // two (the default), the checkpoint flush that `maintain`
                // asks for while RocksDB is already flushing waits inside
                // RocksDB (`WaitUntilFlushWouldNotStallWrites`) until that
                // flush ends, and so does the storage thread (0.4 s in the
                // case timed); every ensemble member logged it 1-2 times per
                // run of 16x32 10 KiB deletes then multi10. A/B on fresh 3-member
                // ensembles, that sequence, 2 runs each: waits 0 against
                // 1-2 per member; delete 16x32 10 KiB p99.9 56 / 48 ms
                // against 149 / 172 ms. Costs up to one more 64 MB memtable
                // under heavy writes.
                o.set_max_write_buffer_number(3);
                // Room in level 0 for bursts: 16x32 10 KiB creates at
                // 20k/s (160 MB/s) flush a memtable every ~0.4 s, faster
                // than one compaction thread merges them, and at RocksDB's
                // default trigger (20 files) writes were slowed to 16 MB/s
                // ("Stalling writes because we have 20 level-0 files"; p99
                // 317-319 ms). At 40, two 8 s runs ended at 25-27 files
                // with no stall, p99 48 ms. More files in level 0 cost
                // only a wider merge when the tree is read back.
                // Merging only from 8 sorted runs on (instead of 4): blob
                // garbage collection (below) moves the live records out of
                // the oldest blob files whenever a compaction passes over
                // their keys, and at 4 the compactions that followed each
                // checkpoint flush kept reaching the run that holds the
                // long-lived nodes, moving 150-450 MB of 10 KiB nodes at a
                // time, 3-5 s of writes on the disk the log syncs on.
                // Standalone, one server through the whole benchmark
                // sequence (`bench.sh` rows in order), RocksDB's event log
                // counted 2567 MB of blobs rewritten by compaction at 4,
                // 204 MB at 8; late rows of that sequence, at 4 then at 8:
                //   set 1x1 10 KiB p99      1267/1766/1391 -> 352/354/467 us
                //   create 1x1 10 KiB p99    574/663/674   -> 617/402/399 us
                //   set 16x32 10 KiB   32.9k/29.9k/32.7k -> 34.2k/36.8k/36.6k ops/s
                // The price is garbage held longer: 60 s of 16x32 10 KiB sets
                // over 16,000 nodes (160 MB live), du of the data directory
                // every 10 s: 630/524/439/408/530/457/413 MB at 4,
                // 628/517/779/828/556/500/529 MB at 8. The tree is never
                // read from RocksDB while serving, so more runs cost only a
                // wider merge at start-up: 1M znodes of 100 B came back in
                // 1.84 s at 8 (`bench-scale.py`; 2.01-2.41 s in earlier runs
                // at 4).
                o.set_level_zero_file_num_compaction_trigger(L0_COMPACTION_TRIGGER);
                o.set_level_zero_slowdown_writes_trigger(L0_SLOWDOWN_TRIGGER);
                o.set_level_zero_stop_writes_trigger(L0_SLOWDOWN_TRIGGER + 16);
                // Records of 4 KiB and more (nodes with big data) go to blob
                // files when flushed, and compaction then rewrites only the
                // keys and references, not the data. Measured with
                // incompressible data (`zkbench --fill random`; the tuning
                // above used one repeated byte, which LZ4 makes vanish),
                // fresh standalone, 16x32 10 KiB create, set, multi10,
                // delete, mix, 2 alternations, ops/s:
                //   create  10.7k/10.8k -> 14.1k/12.6k
                //   set     11.0k/9.6k  -> 13.4k/13.7k
                //   multi10  894/824    -> 1480/1346
                // and repeated byte 15.6k/16.6k -> 21.2k/19.5k creates.
                // 100-byte records stay in the SST blocks (no change to
                // those rows). Garbage collection moves what is still live
                // out of the oldest quarter of blob files as compaction
                // passes them: 6 x 10 s of sets over 160 MB of nodes kept
                // the store at 198-263 MB (163-292 MB without blobs).
                // Restart reads each big node from its blob: 1 GB of 10 KiB
                // nodes came back in 2.1-2.5 s instead of 1.6 s.
                o.set_enable_blob_files(true);
                o.set_min_blob_size(4096);
                // Garbage collection (measured above always on) starts
                // off; `steer_blob_gc` turns it on while garbage is a large
                // share of the blob files (`blobgc` says why).
                o.set_enable_blob_gc(false);
                o.set_blob_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            ColumnFamilyDescriptor::new(n, o)
        });
        // Named, or the crate opens it with RocksDB's defaults whatever
        // `opts` says.
        let mut default_cf = Options::default();
        default_cf.set_max_write_buffer_number(DEFAULT_CF_MEMTABLES);
        let cfs = cfs.chain(std::iter::once(ColumnFamilyDescriptor::new(
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            default_cf,
        )));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let base = read_u64(&db, KEY_LOG_BASE)?;
        let gen = read_u64(&db, KEY_LOG_GEN)?;
        // Where the checkpoint is (an earlier zkd kept it in `default`).
        let nodes = db.cf_handle(CF_NODES).expect("created at open");
        let last = match db.get_cf(nodes, META_LAST_ZXID)? {
            Some(v) => Some(v),
            None => db.get(KEY_OLD_LAST_ZXID)?,
        };
        let last = match last {
            Some(v) => u64::from_be_bytes(be8(&v, "the last_zxid record")?),
            None => 0,
        };
        let mut replay = Vec::new();
        // Direct writes for the standalone log only: A/B on the build
        // machine, standalone (3 alternations), every write row gained
        // (set 1x1 +5%, create 16x32 10 KiB +8%); on a 3-member ensemble
        // sharing one disk (2 alternations), create 16x32 10 KiB lost 12%
        // (8.6k/8.2k -> 7.4k/7.4k ops/s) while multi10 16x32 gained 7%.
        // Again on the ensemble, with its 1x1 rows (fresh ensembles, 2
        // alternations of 4 s, ops/s, page cache -> direct): delete 1x1
        // 3,400/3,455 -> 3,431/3,449, setData 1x1 3,629/3,191 ->
        // 3,649/3,602, create 1x1 10 KiB 2,508/2,376 -> 2,228/1,913,
        // multi10 1x1 10 KiB 1,353/1,367 -> 1,410/1,342, setData 16x32
        // 79.9k/86.0k -> 69.9k/66.4k, multi10 16x32 33.4k/31.6k ->
        // 30.3k/25.0k: nothing gained that the noise does not cover, and
        // the batched rows lost.
        let txlog = TxnLog::open(&log_dir.join(TXNLOG_DIR), 0, true, |z, d| {
            if z > last {
                replay.push((z, d.to_vec()));
            }
            Ok(())
        })?;
        let mut zab_records = Vec::new();
        let zablog = TxnLog::open(&log_dir.join(ZABLOG_DIR), gen, false, |zxid, d| {
            if zxid > base {
                zab_records.push(zkd_zab::types::Txn {
                    zxid,
                    data: d.to_vec().into(),
                });
            }
            Ok(())
        })?;
        let mut store = Store {
            db: Arc::new(db),
            txlog,
            zablog,
            replay,
            zab_records,
            written_zxid: last as i64,
            staged: Staged::default(),
            flushing: None,
            pending_base: None,
            zab_free: 0,
            flushed: last as i64,
            moving: None,
            moved: false,
            refs: Refs::default(),
            big_rewrites: Default::default(),
            last_write: Instant::now(),
            blob_gc: BlobGc::new(crate::blobgc::FLOOR),
            blob_gc_steered: Instant::now(),
            awake: None,
            prepared: None,
            reading: Arc::default(),
        };
        store.upgrade_layout(base)?;
        Ok(store)
    }

    /// From now on, the log syncs that clients and peers wait for run with
    /// `awake`'s helper spinning on the syncing thread's CPU.
    pub fn keep_cpu_awake(&mut self, awake: Awake) {
        self.awake = Some(awake);
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    fn nodes(&self) -> &rocksdb::ColumnFamily {
        self.cf(CF_NODES)
    }

    fn checkpoint_zxid(&self) -> Result<Option<i64>, StoreError> {
        match self.db.get_cf(self.nodes(), META_LAST_ZXID)? {
            None => Ok(None),
            Some(v) => Ok(Some(i64::from_be_bytes(be8(&v, "the last_zxid record")?))),
        }
    }

    /// A store written by an earlier zkd kept sessions, `last_zxid` and
    /// both logs in RocksDB (every write through its WAL): move them to
    /// where they live now, once, before anything is read.
    fn upgrade_layout(&mut self, base: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        if let Some(old) = self.db.cf_handle(CF_OLD_SESSIONS) {
            for item in self.db.iterator_cf(old, rocksdb::IteratorMode::Start) {
                let (k, v) = item?;
                let id = i64::from_be_bytes(be8(&k, "a session key")?);
                batch.put_cf(self.nodes(), session_key(id), v);
                batch.delete_cf(old, k);
            }
        }
        if let Some(v) = self.db.get(KEY_OLD_LAST_ZXID)? {
            batch.put_cf(self.nodes(), META_LAST_ZXID, v);
            batch.delete(KEY_OLD_LAST_ZXID);
        }
        if let Some(old) = self.db.cf_handle(CF_OLD_ZAB_LOG) {
            let mut moved = 0;
            for item in self.db.iterator_cf(old, rocksdb::IteratorMode::Start) {
                let (k, v) = item?;
                let zxid = u64::from_be_bytes(be8(&k, "a ZAB log key")?);
                if zxid > base && zxid > self.zablog.last_zxid() {
                    self.zablog.append(zxid, &v)?;
                    self.zab_records.push(zkd_zab::types::Txn {
                        zxid,
                        data: v.to_vec().into(),
                    });
                    moved += 1;
                }
                batch.delete_cf(old, k);
            }
            self.zablog.sync()?;
            if moved > 0 {
                log::info!("moved {moved} ZAB log records out of RocksDB into {ZABLOG_DIR}");
            }
        }
        if let Some(old) = self.db.cf_handle(CF_OLD_LOG) {
            // Its txns are all in the tree already (they were written in
            // the same batch): nothing to move.
            batch.delete_range_cf(old, [].as_slice(), [0xff; 9].as_slice());
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &synced())?;
        }
        Ok(())
    }

    /// Reads the tree and sessions back and redoes the logged txns the
    /// checkpoint had not reached. A store with log records but no
    /// checkpoint is refused rather than started empty (ZOOKEEPER-2325).
    pub fn load(&mut self) -> Result<Loaded, StoreError> {
        // A leader that stepped down reads back what it wrote.
        self.write_staged()?;
        let Some(mut last_zxid) = self.checkpoint_zxid()? else {
            let has_nodes = self
                .db
                .iterator_cf(self.nodes(), rocksdb::IteratorMode::Start)
                .next()
                .is_some();
            if !self.txlog.is_empty() || !self.zablog.is_empty() || has_nodes {
                return Err(StoreError(
                    "the data directory holds log or tree records but no last_zxid: refusing to start over it".into(),
                ));
            }
            // A new store: write the initial tree durably before serving.
            let tree = DataTree::new();
            let mut batch = WriteBatch::default();
            for (p, n) in tree.iter() {
                batch.put_cf(self.nodes(), node_key(p), n.encode());
            }
            batch.put_cf(self.nodes(), META_LAST_ZXID, 0i64.to_be_bytes());
            self.db.write_opt(batch, &synced())?;
            return Ok(Loaded {
                tree,
                last_zxid: 0,
                sessions: Vec::new(),
            });
        };
        let expected = self
            .db
            .property_int_value_cf(self.nodes(), "rocksdb.estimate-num-keys")?
            .unwrap_or(0);
        let mut tree = TreeBuilder::new(expected.min(1 << 28) as usize);
        let mut sessions = HashMap::new();
        // Records whose data is in a log, resolved after the scan (each
        // log file read once).
        let mut refs = Vec::new();
        for item in
            self.db
                .iterator_cf_opt(self.nodes(), whole_scan(), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            match k.first() {
                Some(&0xFF) => {}
                Some(&SESSION_PREFIX) => {
                    let id = i64::from_be_bytes(be8(&k[1..], "a session key")?);
                    let s = decode_session(id, &v)
                        .ok_or_else(|| StoreError(format!("damaged session 0x{id:x}")))?;
                    sessions.insert(id, s);
                }
                _ if valueref::is_ref(&v) => refs.push((k.to_vec(), v.to_vec())),
                _ => tree.add(&k, &v)?,
            }
        }
        self.refs.clear();
        for (k, v) in &refs {
            self.refs.note(k, Some(v));
        }
        for (k, v) in resolve_refs(refs, &self.log_readers())? {
            tree.add(&k, &v)?;
        }
        let mut tree = tree.finish()?;
        let replay = std::mem::take(&mut self.replay);
        if !replay.is_empty() {
            last_zxid = self.redo(&mut tree, &mut sessions, last_zxid, &replay)?;
            // Make the redone state the checkpoint (the next start need
            // not redo it again, and RocksDB frees the memtable it sits
            // in). Inserts split full leaves in two half-empty ones:
            // rebuild the map as a load builds it. A flush that fails (a
            // full disk) costs only memory: the log still holds the txns.
            if let Err(e) = self.flush() {
                log::warn!("could not flush the checkpoint after the redo: {e}");
            }
            tree.compact();
        }
        // The load's staging (and the redo's log records) are garbage now.
        drop(replay);
        crate::purge::release_freed_memory();
        let mut sessions: Vec<RestoredSession> = sessions.into_values().collect();
        sessions.sort_by_key(|s| s.id);
        Ok(Loaded {
            tree,
            last_zxid,
            sessions,
        })
    }

    /// Applies the standalone log's txns after the checkpoint, then writes
    /// what they changed (the log still holds them, so unlogged).
    fn redo(
        &mut self,
        tree: &mut DataTree,
        sessions: &mut HashMap<i64, RestoredSession>,
        from: i64,
        records: &[(u64, Vec<u8>)],
    ) -> Result<i64, StoreError> {
        // The last record of every path the txns changed.
        let mut nodes = std::collections::BTreeMap::new();
        let mut touched = std::collections::BTreeSet::new();
        let mut last = from;
        for (zxid, rec) in records {
            let (hdr, txn) = Txn::decode_entry(rec)
                .map_err(|e| StoreError(format!("damaged log record 0x{zxid:x}: {e:?}")))?;
            if hdr.zxid as u64 != *zxid || hdr.zxid <= last {
                return Err(StoreError(format!(
                    "log record 0x{zxid:x} holds txn 0x{:x} after 0x{last:x}",
                    hdr.zxid
                )));
            }
            tree.begin();
            if !zkd_core::apply::apply_tree(tree, &hdr, &txn) {
                tree.rollback();
                return Err(StoreError(format!(
                    "logged txn 0x{zxid:x} does not apply to the checkpoint at 0x{last:x}"
                )));
            }
            let records = tree.commit().records.into_iter();
            nodes.extend(records.map(|(p, v)| (p, v.map(NodeRecord::into_vec))));
            match &txn {
                Txn::CreateSession { timeout_ms, passwd } => {
                    sessions.insert(
                        hdr.session,
                        RestoredSession {
                            id: hdr.session,
                            timeout_ms: *timeout_ms,
                            passwd: *passwd,
                        },
                    );
                    touched.insert(hdr.session);
                }
                Txn::CloseSession => {
                    sessions.remove(&hdr.session);
                    touched.insert(hdr.session);
                }
                _ => {}
            }
            last = hdr.zxid;
        }
        let mut batch = WriteBatch::default();
        let session_records: Vec<(i64, Option<Vec<u8>>)> = touched
            .into_iter()
            .map(|id| {
                let rec = sessions
                    .get(&id)
                    .map(|s| zkd_core::server::encode_session(s.timeout_ms, &s.passwd));
                (id, rec)
            })
            .collect();
        put_records(
            &mut batch,
            &self.db,
            &mut self.refs,
            nodes.iter().map(|(p, v)| (&p[..], v.as_deref())),
            session_records.iter().map(|(id, v)| (*id, v.as_deref())),
        );
        self.write_checkpoint(batch, Some(last))?;
        log::info!(
            "redid {} logged txns after the checkpoint at 0x{from:x}, now at 0x{last:x}",
            records.len()
        );
        Ok(last)
    }

    /// Writes the staged records to RocksDB, unlogged, in one batch with
    /// the zxid they reach.
    fn write_staged(&mut self) -> Result<(), StoreError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let last = self.staged.last;
        let mut batch = WriteBatch::default();
        put_records(
            &mut batch,
            &self.db,
            &mut self.refs,
            self.staged
                .nodes
                .iter()
                .map(|(p, v)| (&p[..], v.as_deref())),
            self.staged
                .sessions
                .iter()
                .map(|(id, v)| (*id, v.as_deref())),
        );
        // Cleared (capacity kept) once in the batch, which copied them.
        self.staged.clear();
        self.write_checkpoint(batch, last)
    }

    /// Writes tree records, unlogged, with the zxid they reach (`None`:
    /// records of txns not yet applied, which leave it as it is).
    fn write_checkpoint(
        &mut self,
        mut batch: WriteBatch,
        last: Option<i64>,
    ) -> Result<(), StoreError> {
        if let Some(z) = last {
            batch.put_cf(self.nodes(), META_LAST_ZXID, z.to_be_bytes());
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &unlogged())?;
        }
        if let Some(z) = last {
            self.written_zxid = z;
        }
        Ok(())
    }

    /// Stages a synced group's tree records; writes them all once they
    /// are `STAGED_MAX_BYTES`, or at once while records seldom repeat a
    /// key (see `Staged::repeating`).
    /// `refs`: the log the group's txns are in and their zxids, for
    /// records that may refer to their data there (`valueref`).
    fn stage(
        &mut self,
        group: &mut [Persist],
        last: Option<i64>,
        refs: Option<(Log, std::ops::RangeInclusive<u64>)>,
    ) -> Result<(), StoreError> {
        self.last_write = Instant::now();
        // References pay when the data dies (is overwritten or deleted)
        // before its log file is due to go: it is then never written
        // again. Data that lives on is moved into the checkpoint in the
        // end, read back from the log: more work than writing it at once.
        // A 3-member ensemble under 16x32 10 KiB creates (every node new)
        // ran 7.4k/9.5k ops/s with references against 11.7k/11.8k
        // without; under multi10 of setData over 16,000 nodes,
        // 1.6k-2.1k against 0.9k-1.4k (`valueref` has the why).
        for p in group.iter() {
            for (path, v) in &p.nodes {
                if v.as_ref().is_some_and(|v| v.len() >= valueref::REF_MIN) {
                    self.big_rewrites.see(path.as_bytes(), true);
                }
            }
        }
        let refs = refs.filter(|_| self.big_rewrites.rate() >= BIG_REWRITES_FOR_REFS);
        // Only txns after everything the log may have freed (see
        // `free_logs`): those after the checkpoint's zxid.
        let after = self.reached_zxid();
        // Each record becomes a reference, or whole (data shared with the
        // tree copied now, on this thread).
        for (_, v) in group.iter_mut().flat_map(|p| p.nodes.iter_mut()) {
            let Some(rec) = v else { continue };
            let made = refs.as_ref().and_then(|(log, logged)| {
                valueref::make(rec, *log, |z| z as i64 > after && logged.contains(&z))
            });
            match made {
                Some(r) => *rec = NodeRecord::Whole(r),
                None => rec.make_whole(),
            }
        }
        if self.staged.is_empty() && !self.staged.repeating() {
            // Straight into a batch, the group's last record of each key
            // only: a batch is applied in order, so the earlier ones
            // would only be written, sorted at the flush and dropped (a
            // create also rewrites its parent).
            self.staged.observe(group);
            let mut batch = WriteBatch::default();
            put_records(
                &mut batch,
                &self.db,
                &mut self.refs,
                last_of_each(group.iter().map(|p| &p.nodes[..]))
                    .map(|(p, v)| (&p[..], v.as_ref().map(NodeRecord::whole))),
                last_of_each(group.iter().map(|p| &p.sessions[..]))
                    .map(|(id, v)| (*id, v.as_deref())),
            );
            return self.write_checkpoint(batch, last);
        }
        self.staged.add(group, last);
        if self.staged.bytes >= STAGED_MAX_BYTES || !self.staged.repeating() {
            self.write_staged()?;
        }
        Ok(())
    }

    /// The zxid the checkpoint reaches with what is staged.
    fn reached_zxid(&self) -> i64 {
        self.staged.last.unwrap_or(self.written_zxid)
    }

    /// Makes a group of persists durable: their txns in one synced log
    /// write, then their tree records (rule 1).
    pub fn commit(&mut self, group: &mut [Persist]) -> Result<i64, StoreError> {
        let last = self.commit_log(group)?;
        self.commit_tree(group, last)?;
        Ok(last)
    }

    /// The durable half of `commit`: the group's txns, synced. Returns the
    /// zxid now durable; the caller may answer for it before `commit_tree`
    /// (reads are served from memory, and a crash redoes the tree from the
    /// log).
    pub fn commit_log(&mut self, group: &[Persist]) -> Result<i64, StoreError> {
        let mut last = self.reached_zxid();
        let mut records = 0;
        for p in group {
            for (zxid, rec) in &p.log {
                self.txlog.append(*zxid as u64, rec)?;
            }
            records += p.log.len();
            last = last.max(p.last_zxid);
        }
        sync_log(&mut self.awake, &mut self.txlog, records)?;
        Ok(last)
    }

    /// The checkpoint half of `commit`: the group's tree records (taken
    /// out of it), staged, after `commit_log` returned `last` for the same
    /// group.
    pub fn commit_tree(&mut self, group: &mut [Persist], last: i64) -> Result<(), StoreError> {
        let mut logged = group.iter().flat_map(|p| &p.log).map(|(z, _)| *z as u64);
        let refs = logged.next().map(|first| {
            let last = logged.next_back().unwrap_or(first);
            (Log::Txn, first..=last)
        });
        self.stage(group, Some(last), refs)?;
        self.maintain()
    }

    /// Work for idle moments, one piece per call; `waited` says the call
    /// comes after waiting out an `Idle::After`.
    /// - A piece of the standalone log's next file is zeroed (see
    ///   `TxnLog::prepare_ahead`). Not the ZAB log: with three members on
    ///   one disk (`bench.sh --ensemble --run "create 1 1 10240"`, 2
    ///   alternations) it cost 14% (1,638/1,644 -> 1,412/1,406 ops/s, p50
    ///   +85 µs): a member's storage thread takes two or three jobs per
    ///   write, and each could find a piece in progress.
    /// - `maintain` runs again while it has something to finish (a flush
    ///   to see done, or one put off). Only writes ran it before: a burst
    ///   that ended just after the log rolled kept the full 64 MiB file
    ///   until the next write, however long the server stayed idle.
    /// - A piece of the data being moved out of a log file (`move_piece`),
    ///   so a move started by the last writes ends without more of them.
    pub fn idle(&mut self, waited: bool) -> Idle {
        if waited {
            if let Err(e) = self.maintain() {
                // The next write runs it again, and stops the server if
                // it fails there.
                log::warn!("checkpoint maintenance failed while idle: {e}");
                return Idle::Done;
            }
        }
        let more = self.txlog.prepare_ahead().unwrap_or_else(|e| {
            // Not fatal: the appends extend their own file as before.
            log::warn!("cannot prepare the next log file: {e}");
            false
        });
        if self.moving.is_some() {
            if let Err(e) = self.move_piece() {
                log::warn!("moving data into the checkpoint failed while idle: {e}");
                return Idle::Done;
            }
            return Idle::More;
        }
        if more {
            Idle::More
        } else if self.flushing.is_some() || self.wants_flush() {
            Idle::After(MAINTAIN_WHILE_IDLE)
        } else if let Some(wait) = self.idle_move() {
            wait
        } else {
            Idle::Done
        }
    }

    /// Once no write has come for `MOVE_WHEN_IDLE_FOR`, the data still
    /// referred to in any file but the one being appended to is moved
    /// (what a busy server moves only beyond `HOLD_LOG_FILES`, and only
    /// once nothing else keeps the file; ZAB may still keep these): the
    /// work deferred by references is done while nothing waits for it,
    /// not during the next burst of writes, which then frees the files as
    /// soon as the checkpoint and ZAB's base pass them. A
    /// 3-member ensemble ran multi10 16x32 10 KiB, then mix 16x32 10 KiB,
    /// then multi10 1x1 10 KiB on the same members: with the moves left
    /// to the writes that came next, 35.7k and 596 ops/s for the last two
    /// against 51.9k and 880 without references.
    fn idle_move(&mut self) -> Option<Idle> {
        let movable = [Log::Txn, Log::Zab].into_iter().any(|log| {
            self.movable_through(log, 1, false)
                .is_some_and(|t| self.refs.held_below(log) < t)
        });
        if !movable {
            return None;
        }
        let idle_for = self.last_write.elapsed();
        if idle_for < MOVE_WHEN_IDLE_FOR {
            return Some(Idle::After(MOVE_WHEN_IDLE_FOR - idle_for));
        }
        if let Err(e) = self.start_moving(1, false) {
            log::warn!("cannot move data into the checkpoint while idle: {e}");
            return None;
        }
        Some(Idle::More)
    }

    /// Makes the whole checkpoint durable now (an import; a clean stop).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.write_staged()?;
        let held = self.held();
        self.db.flush_cf(self.nodes())?;
        self.flushing = Some((self.written_zxid, held));
        self.moved = false;
        self.maintain()
    }

    /// Rule 2: once a flush has covered the checkpoint as it was when the
    /// flush was asked for, the log files below it are freed and ZAB's base
    /// raised; a new flush is asked for when there is something to free.
    fn maintain(&mut self) -> Result<(), StoreError> {
        // Once a second, not per write: the garbage changes only with
        // compactions. Not fatal: collection only frees space.
        if self.blob_gc_steered.elapsed() >= STEER_BLOB_GC_EVERY {
            self.blob_gc_steered = Instant::now();
            if let Err(e) = self.steer_blob_gc() {
                log::warn!("cannot switch blob garbage collection: {e}");
            }
        }
        // A read of the state may still resolve references into any file
        // of the logs as they were when it began: none is freed meanwhile.
        let reading = self.reading.load(Ordering::Acquire) > 0;
        if let Some((z, held)) = self.flushing.filter(|_| !reading) {
            if self.unflushed_memtables()? == 0 {
                self.flushing = None;
                self.free_logs(z, held)?;
            }
        }
        if !reading {
            // An install's old generation, if a read kept it (`install`).
            self.zablog.drop_older()?;
        }
        if self.moving.is_none() {
            self.start_moving(HOLD_LOG_FILES, true)?;
        }
        self.move_piece()?;
        // A flush for a raised base only once the base frees a ZAB log
        // file: ZAB compacts every snapSizeLimitInKb / 2 of delivered txns
        // (32 MiB by default), and a flush asked for while the base is
        // still inside the file being appended to frees nothing. It saves
        // less than that suggests, as a full memtable is flushed anyway:
        // 3-member ensemble, 16x32 10 KiB set, multi10 1x1 10 KiB, multi10
        // 16x32 100 B (~0.95 GB of txns per member): 22 -> 20 flushes.
        if self.flushing.is_none() && self.wants_flush() && self.flush_would_not_stall()? {
            self.start_flush()?;
        }
        Ok(())
    }

    /// After a flush that covered the checkpoint at `z`, asked for when
    /// no record referred into the logs at or below `held`: frees the log
    /// files it covers that no record refers into (rule 2), and raises
    /// ZAB's base. `held` as of the request, not now: the records a move
    /// rewrote since are not in the flush.
    fn free_logs(&mut self, z: i64, held: [u64; 2]) -> Result<(), StoreError> {
        self.flushed = z;
        self.txlog.trim_through((z as u64).min(held[0]))?;
        if let Some(b) = self.pending_base.filter(|b| *b as i64 <= z) {
            self.db.put_opt(KEY_LOG_BASE, b.to_be_bytes(), &synced())?;
            self.zab_free = self.zab_free.max(b);
            self.pending_base = None;
        }
        self.zablog.trim_through(self.zab_free.min(held[1]))?;
        Ok(())
    }

    /// Per log, the zxid below which no record refers into it.
    fn held(&self) -> [u64; 2] {
        [
            self.refs.held_below(Log::Txn),
            self.refs.held_below(Log::Zab),
        ]
    }

    /// The last zxid of the files of `log` beyond its newest `keep`; with
    /// `freeable`, only those nothing but references keeps (the checkpoint
    /// is past them, and ZAB's base too).
    fn movable_through(&self, log: Log, keep: usize, freeable: bool) -> Option<u64> {
        let upto = |covered: u64| if freeable { covered } else { u64::MAX };
        match log {
            Log::Txn => self
                .txlog
                .last_beyond(keep, upto(self.reached_zxid().max(0) as u64)),
            Log::Zab => self.zablog.last_beyond(keep, upto(self.zab_free)),
        }
    }

    /// Begins moving the data still referred to in the files of a log
    /// beyond its newest `keep` (`movable_through`) into the records,
    /// `move_piece` by piece.
    fn start_moving(&mut self, keep: usize, freeable: bool) -> Result<(), StoreError> {
        for log in [Log::Txn, Log::Zab] {
            let Some(through) = self.movable_through(log, keep, freeable) else {
                continue;
            };
            let entries = self.refs.through(log, through);
            let wanted: BTreeSet<u64> = entries.iter().map(|(_, z)| *z).collect();
            let records = match log {
                Log::Txn => self.txlog.read(&wanted)?,
                Log::Zab => self.zablog.read(&wanted)?,
            };
            self.moving = Some(Moving {
                log,
                through,
                entries,
                next: 0,
                records,
                moved: 0,
            });
            return Ok(());
        }
        Ok(())
    }

    /// Moves the next piece (`MOVE_PIECE_BYTES`) of the data being moved
    /// into its records, in one unlogged batch: the next flush makes it
    /// durable, and until then the file stays. When the last piece is
    /// written, a flush is wanted.
    fn move_piece(&mut self) -> Result<(), StoreError> {
        let Some(mut m) = self.moving.take() else {
            return Ok(());
        };
        // Records staged and not written yet are written after this
        // batch, and `refs` does not hold them: a node they rewrite is
        // moved only if its record in RocksDB still refers here.
        let mut batch = WriteBatch::default();
        let mut bytes = 0;
        let mut resolver = valueref::Resolver::default();
        while m.next < m.entries.len() && bytes < MOVE_PIECE_BYTES {
            let (key, zxid) = &m.entries[m.next];
            m.next += 1;
            let v = match self.refs.get(key) {
                Some(v) if refers(v, m.log, *zxid) => v.to_vec(),
                _ => continue,
            };
            let (path, r) = parse_ref(key, &v)?;
            let rec = resolver
                .resolve(&r, &path, &m.records[zxid])
                .map_err(StoreError)?;
            bytes += rec.len();
            self.refs.note(key, Some(&rec));
            batch.put_cf(self.nodes(), key, rec);
            m.moved += 1;
        }
        self.write_checkpoint(batch, None)?;
        if m.next < m.entries.len() {
            self.moving = Some(m);
            return Ok(());
        }
        if m.moved > 0 {
            let name = match m.log {
                Log::Txn => "txn",
                Log::Zab => "zab",
            };
            log::info!(
                "event=data_moved log={name} through_zxid=0x{:x} nodes={}",
                m.through,
                m.moved
            );
        }
        self.moved = true;
        Ok(())
    }

    /// Readers of both logs (`Log` order) as they are now.
    fn log_readers(&self) -> [LogReader; 2] {
        [self.txlog.reader(), self.zablog.reader()]
    }

    /// Switches blob garbage collection on or off for the garbage the blob
    /// files now hold (see `blobgc`).
    fn steer_blob_gc(&mut self) -> Result<(), StoreError> {
        let prop = |name| {
            self.db
                .property_int_value_cf(self.nodes(), name)
                .map(|v| v.unwrap_or(0))
        };
        let files = prop("rocksdb.live-blob-file-size")?;
        let garbage = prop("rocksdb.live-blob-file-garbage-size")?;
        if let Some(on) = self.blob_gc.change(files, garbage) {
            let value = if on { "true" } else { "false" };
            self.db
                .set_options_cf(self.nodes(), &[("enable_blob_garbage_collection", value)])?;
            self.blob_gc.switched(on);
            log::info!(
                "event=blob_gc on={on} blob_files_mb={} garbage_mb={}",
                files >> 20,
                garbage >> 20
            );
        }
        Ok(())
    }

    /// Whether a flush is due: the standalone log has closed a file since
    /// the last flush, ZAB's raised base covers a whole file of its log,
    /// or the data still referred to in a file was moved (`move_piece`).
    /// Each of those frees a file unless records still refer into it.
    fn wants_flush(&self) -> bool {
        // Reached, not written: what is staged goes with the flush.
        let rolled = self
            .txlog
            .last_beyond(1, u64::MAX)
            .is_some_and(|l| l as i64 <= self.reached_zxid() && l as i64 > self.flushed);
        self.moved
            || rolled
            || self
                .pending_base
                .is_some_and(|b| self.zablog.frees_through(b))
    }

    /// Memtables of the checkpoint that are full and not yet flushed.
    fn unflushed_memtables(&self) -> Result<u64, StoreError> {
        Ok(self
            .db
            .property_int_value_cf(self.nodes(), "rocksdb.num-immutable-mem-table")?
            .unwrap_or(1))
    }

    /// Whether a checkpoint flush asked for now would start at once. It
    /// would not while a full memtable is still being flushed, or while
    /// level 0 holds so many files that one more (plus the last level)
    /// reaches the slowdown trigger: RocksDB then makes the request wait
    /// (`WaitUntilFlushWouldNotStallWrites`), and with it the storage
    /// thread and every write behind it. 16x32 10 KiB creates at 16-19k/s
    /// (huge pages refused) fill a 64 MiB log file every ~0.4 s; a flush
    /// per file outran compaction to 18 level-0 files, and a log sync
    /// waited 1.9-2.7 s there (p99.9 2.2-3.3 s). A flush put off is asked
    /// for again at the next write, or after `MAINTAIN_WHILE_IDLE` with
    /// none; the log keeps its files until then.
    fn flush_would_not_stall(&self) -> Result<bool, StoreError> {
        let l0_files = self
            .db
            .property_int_value_cf(self.nodes(), "rocksdb.num-files-at-level0")?
            .unwrap_or(u64::MAX);
        Ok(self.unflushed_memtables()? == 0
            && l0_files.saturating_add(2) < L0_SLOWDOWN_TRIGGER as u64)
    }

    fn get_u64(&self, key: &[u8]) -> Result<u64, StoreError> {
        read_u64(&self.db, key)
    }

    /// Has this store ever been part of an ensemble?
    pub fn is_ensemble(&self) -> Result<bool, StoreError> {
        Ok(self.get_u64(KEY_ACCEPTED_EPOCH)? > 0 || !self.zablog.is_empty())
    }

    /// ZAB's durable state: epochs, the log after its base; `applied` is
    /// the checkpoint's `last_zxid`. The log is handed out once.
    pub fn load_zab(&mut self, applied: i64) -> Result<zkd_zab::peer::Durable, StoreError> {
        let base = self.get_u64(KEY_LOG_BASE)?;
        if (applied as u64) < base {
            return Err(StoreError(format!(
                "the tree is at 0x{applied:x} but the ZAB log was compacted to 0x{base:x}"
            )));
        }
        Ok(zkd_zab::peer::Durable {
            accepted_epoch: self.get_u64(KEY_ACCEPTED_EPOCH)?,
            current_epoch: self.get_u64(KEY_CURRENT_EPOCH)?,
            log: std::mem::take(&mut self.zab_records),
            applied: applied as u64,
            base,
        })
    }

    /// Leader: reads the applied state (tree and sessions at `last_zxid`)
    /// for a SNAP on a thread of its own, and hands it to `done` there.
    /// It is the state as of this call, from one RocksDB snapshot taken
    /// before this returns: this thread writes on meanwhile. At a million
    /// znodes the read takes ~0.8 s, which the storage thread (and the
    /// core, which used to wait for it) no longer spends.
    pub fn read_state_in_background(
        &mut self,
        done: impl FnOnce(Result<(u64, Vec<u8>), StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.write_staged()?;
        let db = Arc::clone(&self.db);
        let readers = self.log_readers();
        // Counted here, before any later job can free a file.
        let reading = Reading::start(&self.reading);
        let (taken_tx, taken_rx) = std::sync::mpsc::sync_channel(0);
        std::thread::Builder::new()
            .name("zkd-state-read".into())
            .spawn(move || {
                let snap = db.snapshot();
                let _ = taken_tx.send(());
                let read = read_state(&db, &snap, &readers);
                drop(snap);
                drop(reading);
                done(read);
            })
            .map_err(|e| StoreError(format!("cannot start a thread to read the state: {e}")))?;
        taken_rx
            .recv()
            .map_err(|_| StoreError("the thread reading the state ended at once".into()))
    }

    /// The applied state, read as a leader reads it for a SNAP.
    #[cfg(test)]
    pub fn applied_state(&mut self) -> Result<(u64, Vec<u8>), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.read_state_in_background(move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().expect("the read answers")
    }

    /// The durable half of writing ZAB's persists and the tree changes of
    /// delivered txns: ZAB's persists (the log synced when `sync` or when
    /// tree records follow: rule 1), epochs through RocksDB's WAL. False
    /// when a snapshot was installed (it writes its tree itself, and
    /// `commit_ensemble_tree` must not follow).
    pub fn commit_ensemble_log(
        &mut self,
        tree: &[Persist],
        zab: &[zkd_zab::peer::Persist],
        sync: bool,
    ) -> Result<bool, StoreError> {
        use zkd_zab::peer::Persist as Z;
        let mut records = 0;
        for p in zab {
            match p {
                Z::AcceptedEpoch(e) | Z::CurrentEpoch(e) => {
                    let key = if matches!(p, Z::AcceptedEpoch(_)) {
                        KEY_ACCEPTED_EPOCH
                    } else {
                        KEY_CURRENT_EPOCH
                    };
                    // In order with the appends before it.
                    self.zablog.sync()?;
                    self.db.put_opt(key, e.to_be_bytes(), &synced())?;
                }
                Z::Append(txns) => {
                    for t in txns {
                        self.zablog.append(t.zxid, &t.data)?;
                    }
                    records += txns.len();
                }
                Z::Applied(_) => {}
                Z::Compact(base) => {
                    self.pending_base = Some(self.pending_base.unwrap_or(0).max(*base))
                }
                Z::Snapshot { upto, state, log } => {
                    // Its job comes alone (see the storage thread) and the
                    // tree changes with it are older than the state.
                    self.install(*upto, state, log)?;
                    return Ok(false);
                }
            }
        }
        if sync || !tree.is_empty() || applied(zab).is_some() {
            sync_log(&mut self.awake, &mut self.zablog, records)?;
        } else {
            self.zablog.write()?;
        }
        Ok(true)
    }

    /// The checkpoint half: the tree records of delivered txns and the
    /// zxid they reach, unlogged, after `commit_ensemble_log` (rule 1).
    pub fn commit_ensemble_tree(
        &mut self,
        tree: &mut [Persist],
        zab: &[zkd_zab::peer::Persist],
    ) -> Result<(), StoreError> {
        let logged = 1..=self.zablog.last_zxid();
        self.stage(tree, applied(zab), Some((Log::Zab, logged)))?;
        self.maintain()
    }

    /// Turns a learner's snapshot into the checkpoint half of its install
    /// while the core decodes the same state into its tree (the driver's
    /// `install`), instead of after it. Nothing is written here: `install`
    /// writes the batch once the core found the state sound and sent the
    /// snapshot on, and a state it refused stops the server with the
    /// batch unwritten.
    ///
    /// Why: at 1,000,000 znodes, parsing the state and building the
    /// batch took ~0.4 s, and the core's decoding ~0.6 s, one after the
    /// other. A follower of a 3-member loopback ensemble holding 1,000,000
    /// znodes, killed, its data wiped and restarted, until kazoo read the
    /// last znode through it (2 fresh ensembles of each build, 3 restarts
    /// each): 3.28, 2.98, 3.11, 3.61, 3.52, 3.45 s -> 2.57, 2.78, 2.89,
    /// 2.62, 2.94, 3.14 s. Its peak RSS did not grow (VmHWM 919-983 MB
    /// before, 931-937 MB after): the batch was built while the state was
    /// held before too.
    pub fn prepare_install(&mut self, upto: u64, state: Arc<Vec<u8>>) {
        match self.install_batch(upto, &state) {
            Ok(batch) => self.prepared = Some((upto, state, batch)),
            // The core's own decoding refuses it too.
            Err(e) => log::debug!("snapshot not prepared: {e}"),
        }
    }

    /// The checkpoint's records of a leader's state, in place of ours.
    fn install_batch(&self, upto: u64, state: &[u8]) -> Result<WriteBatch, StoreError> {
        let rec = crate::ensemble::state::records(state).map_err(StoreError)?;
        let mut batch = WriteBatch::default();
        // Node keys are UTF-8 paths: none starts with 0xff; sessions and
        // last_zxid sort below [0xff, 0xff].
        batch.delete_range_cf(self.nodes(), [].as_slice(), [0xff, 0xff].as_slice());
        for (k, v) in rec.nodes {
            batch.put_cf(self.nodes(), k, v);
        }
        for (id, v) in rec.sessions {
            batch.put_cf(self.nodes(), session_key(id), v);
        }
        batch.put_cf(self.nodes(), META_LAST_ZXID, (upto as i64).to_be_bytes());
        Ok(batch)
    }

    /// Rule 3: a leader's state and log in place of ours.
    fn install(
        &mut self,
        upto: u64,
        state: &Arc<Vec<u8>>,
        log: &[zkd_zab::types::Txn],
    ) -> Result<(), StoreError> {
        // Checked by the driver before it got here; a failure now is
        // damage in memory: stop before writing.
        let mut batch = match self.prepared.take() {
            Some((at, from, batch)) if at == upto && Arc::ptr_eq(&from, state) => batch,
            _ => self.install_batch(upto, state)?,
        };
        let gen = self.zablog.generation() + 1;
        let records: Vec<(u64, &[u8])> = log.iter().map(|t| (t.zxid, &t.data[..])).collect();
        self.zablog.begin_generation(gen, &records)?;
        // Older than the state that replaces them.
        self.staged.clear();
        batch.put(KEY_LOG_BASE, upto.to_be_bytes());
        batch.put(KEY_LOG_GEN, gen.to_be_bytes());
        self.db.write_opt(batch, &synced())?;
        // Else `maintain` frees them once no read of the state refers
        // into them (a leader that stepped down while reading one).
        if self.reading.load(Ordering::Acquire) == 0 {
            self.zablog.drop_older()?;
        }
        self.written_zxid = upto as i64;
        self.pending_base = self.pending_base.filter(|b| *b > upto);
        // The old generation's files are gone, with every reference.
        self.zab_free = 0;
        self.moving = None;
        self.refs.clear();
        // The whole state now sits in one memtable (hundreds of MB at a
        // million znodes) until a flush: start one now, in the background,
        // rather than when the next writes fill a memtable.
        if self.flushing.is_none() {
            self.start_flush()?;
        }
        Ok(())
    }

    /// Asks RocksDB for a flush of the checkpoint in the background;
    /// `maintain` frees what it covers once it is done.
    fn start_flush(&mut self) -> Result<(), StoreError> {
        self.write_staged()?;
        let held = self.held();
        let mut fo = FlushOptions::default();
        fo.set_wait(false);
        self.db.flush_cf_opt(self.nodes(), &fo)?;
        // The default column family holds the few synced records of an
        // ensemble member (epochs, the ZAB log's base) and never fills
        // its memtable: unflushed, it pinned RocksDB's first WAL file and
        // with it every later one (an empty one per checkpoint flush, 60
        // after one `bench.sh --ensemble` pass). Flushing it with each
        // checkpoint lets RocksDB delete them; with nothing in it, the
        // flush does nothing.
        self.db.flush_opt(&fo)?;
        self.flushing = Some((self.written_zxid, held));
        self.moved = false;
        Ok(())
    }

    /// The children of `path` as stored: one prefix scan.
    #[cfg(test)]
    pub fn children(&self, path: &str) -> Result<Vec<String>, StoreError> {
        let mut prefix = path.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.nodes(),
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

/// The state in `snap` encoded for a SNAP, with the data its records
/// refer to read back through `readers`.
fn read_state(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    readers: &[LogReader; 2],
) -> Result<(u64, Vec<u8>), StoreError> {
    let nodes = db.cf_handle(CF_NODES).expect("created at open");
    let zxid = match snap.get_cf(nodes, META_LAST_ZXID)? {
        Some(v) => u64::from_be_bytes(be8(&v, "the last_zxid record")?),
        None => 0,
    };
    let mut w = crate::ensemble::state::StateWriter::new(zxid);
    let mut refs = Vec::new();
    for item in snap.iterator_cf_opt(nodes, whole_scan(), rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        match k.first() {
            Some(&0xFF) => {}
            Some(&SESSION_PREFIX) => {
                w.session(i64::from_be_bytes(be8(&k[1..], "a session key")?), &v)
            }
            _ if valueref::is_ref(&v) => refs.push((k.to_vec(), v.to_vec())),
            _ => w.node(&k, &v),
        }
    }
    for (k, v) in resolve_refs(refs, readers)? {
        w.node(&k, &v);
    }
    Ok((zxid, w.finish()))
}

/// The node records that `refs` (key and reference) stand for, their data
/// read back from the logs, each log file at most once.
fn resolve_refs(
    refs: Vec<KeyedRecord>,
    readers: &[LogReader; 2],
) -> Result<Vec<KeyedRecord>, StoreError> {
    if refs.is_empty() {
        return Ok(refs);
    }
    let mut wanted = [BTreeSet::new(), BTreeSet::new()];
    for (k, v) in &refs {
        let (_, r) = parse_ref(k, v)?;
        wanted[r.log as usize].insert(r.zxid);
    }
    let records = [readers[0].read(&wanted[0])?, readers[1].read(&wanted[1])?];
    let mut resolver = valueref::Resolver::default();
    let mut out = Vec::with_capacity(refs.len());
    for (k, v) in &refs {
        let (path, r) = parse_ref(k, v)?;
        let rec = resolver
            .resolve(&r, &path, &records[r.log as usize][&r.zxid])
            .map_err(StoreError)?;
        out.push((k.clone(), rec));
    }
    Ok(out)
}

/// One background read of the state, counted while it runs.
struct Reading(Arc<AtomicUsize>);

impl Reading {
    fn start(count: &Arc<AtomicUsize>) -> Reading {
        count.fetch_add(1, Ordering::AcqRel);
        Reading(Arc::clone(count))
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How the checkpoint is read when it is read whole (at start-up, and for a
/// learner's snapshot): once, so its blocks stay out of the block cache, and in
/// big reads. A leader reading the state of 1,000,000 znodes for a SNAP
/// (`event=snapshot_sent`'s took_ms, then the read alone; 3-member loopback
/// ensemble, 4 reads each): 954, 985, 927, 843 ms with RocksDB's default read
/// options, 819, 747, 784, 781 ms with these; 821, 817, 989, 1,086 with the
/// cache left out alone, against 796, 816, 845, 844 with both in the same
/// series. Standalone restart to the first read at that size, 3 alternations:
/// 1.50, 1.38, 1.75 s with the cache left out alone, 1.44, 1.25, 1.36 s with
/// both.
fn whole_scan() -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.fill_cache(false);
    ro.set_readahead_size(WHOLE_SCAN_READAHEAD);
    ro
}

/// A store closed in order leaves its staged records in RocksDB, which
/// flushes its memtables when it closes (its WAL is not written): the next
/// start then need not redo their txns from the log.
impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.write_staged() {
            log::warn!("could not write the staged checkpoint records at close: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zk_proto::records::Acl;
    use zkd_core::txn::{Txn, TxnHeader};

    /// An empty directory for one test's store, `name` telling tests apart
    /// (they run in parallel in one process).
    fn fresh_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("zkd-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn keys_round_trip_and_group_children() {
        for p in ["/", "/a", "/a/b", "/zookeeper/quota"] {
            assert_eq!(key_path(&node_key(p)).unwrap(), p);
        }
        assert!(node_key("/a/b").starts_with(b"/a\0"));
        assert!(!node_key("/ab").starts_with(b"/a\0"));
    }

    /// RocksDB records the options each family was opened with; the
    /// `default` family's must be ours, not the crate's defaults.
    #[test]
    fn the_default_family_has_room_for_queued_flushes() {
        let dir = fresh_dir("default-cf");
        drop(Store::open(&dir, &dir).unwrap());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("OPTIONS-") && !n.ends_with(".dbtmp"))
            .collect();
        files.sort_by_key(|n| n[8..].parse::<u64>().unwrap_or(0));
        let text = std::fs::read_to_string(dir.join(files.last().unwrap())).unwrap();
        let section = text
            .split("\n[")
            .find(|s| s.starts_with("CFOptions \"default\"]"))
            .unwrap();
        let want = format!("max_write_buffer_number={DEFAULT_CF_MEMTABLES}");
        assert!(section.lines().any(|l| l.trim() == want), "{section}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn commit_then_reload() {
        let dir = fresh_dir("test");
        {
            let mut s = Store::open(&dir, &dir).unwrap();
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
                nodes: ch.records,
                sessions: vec![(7, Some(zkd_core::server::encode_session(4000, &[1; 16])))],
            };
            assert_eq!(s.commit(&mut [p]).unwrap(), 1);
            s.write_staged().unwrap();
            assert_eq!(s.children("/a").unwrap(), vec!["b".to_string()]);
        }
        let mut s = Store::open(&dir, &dir).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.last_zxid, 1);
        assert_eq!(l.tree.get("/a").unwrap().data[..], b"v"[..]);
        assert_eq!(l.tree.get("/a").unwrap().child_count, 1);
        assert_eq!(l.tree.get("/").unwrap().child_count, 2);
        assert_eq!(l.sessions.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// RocksDB's WAL file reserves at most `max_total_wal_size` (see
    /// `Store::open`): a new store's first synced write reserved 70 MiB
    /// without it, which a `discard` mount sent to the disk as one discard
    /// when the file was closed.
    #[test]
    fn the_wal_reserves_at_most_a_mebibyte() {
        use std::os::unix::fs::MetadataExt;
        let dir = fresh_dir("wal");
        let mut s = Store::open(&dir, &dir).unwrap();
        s.load().unwrap();
        let wals: Vec<u64> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| std::fs::metadata(&p).unwrap().blocks() * 512)
            .collect();
        assert!(!wals.is_empty(), "no WAL file in {}", dir.display());
        for reserved in wals {
            assert!(
                reserved <= WAL_RESERVE_MAX + (64 << 10),
                "a WAL file holds {reserved} bytes"
            );
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Records wait in `staged` across groups, each node's and session's
    /// last only; a flush, a read of the store, or enough bytes write them,
    /// and the checkpoint then holds each key's last record.
    #[test]
    fn staged_records_reach_the_checkpoint_last_one_each() {
        use zkd_core::tree::{Node, NodeStat};
        let dir = fresh_dir("last");
        let node = |data: &[u8]| {
            let acl = std::sync::Arc::new(Acl::open_unsafe());
            Some(Node::new(data.to_vec(), acl, NodeStat::default()).encode())
        };
        let session = Some(zkd_core::server::encode_session(4000, &[1; 16]));
        let persist = |zxid: i64, nodes: Vec<(&str, Option<Vec<u8>>)>, sessions| Persist {
            last_zxid: zxid,
            log: vec![(zxid, entry(0, zxid, &Txn::Error(0)))],
            nodes: (nodes.into_iter())
                .map(|(p, v)| (p.to_string(), v.map(NodeRecord::Whole)))
                .collect(),
            sessions,
        };
        let stored = |s: &Store, path: &str| s.db.get_cf(s.nodes(), node_key(path)).unwrap();
        {
            let mut s = Store::open(&dir, &dir).unwrap();
            s.load().unwrap();
            // Writes of new keys go through at once (tested in `staged`).
            s.staged.assume_repeating();
            let mut group = [
                persist(
                    1,
                    vec![
                        ("/a", node(b"1")),
                        ("/b", node(b"b")),
                        ("/a", node(b"2")),
                        ("/b", None),
                    ],
                    vec![(7, session.clone()), (8, session.clone())],
                ),
                persist(
                    2,
                    vec![("/a", node(b"3")), ("/c", node(b"c"))],
                    vec![(7, None)],
                ),
            ];
            assert_eq!(s.commit(&mut group).unwrap(), 2);
            // /a, /b, /c, sessions 7 and 8: five keys for nine records.
            assert_eq!(s.staged.nodes.len() + s.staged.sessions.len(), 5);
            assert_eq!(stored(&s, "/c"), None, "staged, not written");
            assert_eq!(
                s.commit(&mut [persist(3, vec![("/a", node(b"4"))], vec![])])
                    .unwrap(),
                3
            );
            assert_eq!(s.staged.nodes.len(), 3);
            // Reading the store (a SNAP for a learner) writes them first.
            let (zxid, _) = s.applied_state().unwrap();
            assert_eq!(zxid, 3);
            assert!(s.staged.is_empty());
            assert_eq!(stored(&s, "/a"), node(b"4"));
            // Enough bytes are written at once.
            let big = node(&vec![9; STAGED_MAX_BYTES]);
            s.commit(&mut [persist(4, vec![("/d", big.clone())], vec![])])
                .unwrap();
            assert!(s.staged.is_empty());
            assert_eq!(stored(&s, "/d"), big);
            s.commit(&mut [persist(5, vec![("/d", node(b"d"))], vec![])])
                .unwrap();
            // A leader that stepped down reads its tree back from RocksDB.
            let l = s.load().unwrap();
            assert_eq!(
                (l.last_zxid, &l.tree.get("/d").unwrap().data[..]),
                (5, &b"d"[..])
            );
            // Records that have not been repeating keys are written at once.
            s.staged = Staged::default();
            s.commit(&mut [persist(6, vec![("/e", node(b"e"))], vec![])])
                .unwrap();
            assert_eq!(stored(&s, "/e"), node(b"e"));
            s.staged.assume_repeating();
            s.commit(&mut [persist(7, vec![("/f", node(b"f"))], vec![])])
                .unwrap();
            assert!(!s.staged.is_empty());
            // Closed with /f staged: dropping the store writes it, and
            // RocksDB flushes its memtable as it closes.
        }
        // Read back from the checkpoint itself, not redone from the log.
        std::fs::remove_dir_all(dir.join(TXNLOG_DIR)).unwrap();
        let mut s = Store::open(&dir, &dir).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.last_zxid, 7);
        assert_eq!(l.tree.get("/f").unwrap().data[..], b"f"[..]);
        assert_eq!(l.tree.get("/a").unwrap().data[..], b"4"[..]);
        assert!(l.tree.get("/b").is_none());
        assert_eq!(l.tree.get("/c").unwrap().data[..], b"c"[..]);
        assert_eq!(l.tree.get("/d").unwrap().data[..], b"d"[..]);
        assert_eq!(l.sessions.iter().map(|s| s.id).collect::<Vec<_>>(), [8]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn entry(session: i64, zxid: i64, txn: &Txn) -> Vec<u8> {
        let hdr = TxnHeader {
            session,
            cxid: 0,
            zxid,
            time: 5,
        };
        Txn::encode_entry(&hdr, txn)
    }

    /// `txns` applied to `tree` from `zxid` on, as the server makes a
    /// group of them: their log entries (standalone) or proposals
    /// (`zab`), and the records they change.
    fn applied_group(
        tree: &mut DataTree,
        zxid: &mut i64,
        txns: Vec<Txn>,
        zab: bool,
    ) -> (Persist, Vec<zkd_zab::types::Txn>) {
        let mut p = Persist::default();
        let mut proposals = Vec::new();
        for txn in txns {
            *zxid += 1;
            let hdr = TxnHeader {
                session: 7,
                cxid: 0,
                zxid: *zxid,
                time: 5,
            };
            tree.begin();
            assert!(zkd_core::apply::apply_tree(tree, &hdr, &txn), "{txn:?}");
            p.nodes.extend(tree.commit().records);
            if zab {
                let data = zkd_core::server::Proposal {
                    hdr,
                    txn,
                    origin: 1,
                    err: 0,
                    reply: None,
                    digest: None,
                }
                .encode();
                proposals.push(zkd_zab::types::Txn {
                    zxid: *zxid as u64,
                    data: data.into(),
                });
            } else {
                p.log.push((*zxid, Txn::encode_entry(&hdr, &txn)));
            }
            p.last_zxid = *zxid;
        }
        (p, proposals)
    }

    fn set(path: &str, fill: u8, len: usize) -> Txn {
        Txn::SetData {
            path: path.into(),
            data: vec![fill; len].into(),
            version: -1,
        }
    }

    fn create(path: &str, data: Vec<u8>) -> Txn {
        Txn::Create {
            path: path.into(),
            data: data.into(),
            acl: Acl::open_unsafe(),
            ephemeral_owner: 0,
            parent_cversion: 1,
        }
    }

    fn stored(s: &Store, path: &str) -> Vec<u8> {
        s.db.get_cf(s.nodes(), node_key(path)).unwrap().unwrap()
    }

    /// A standalone server's big data stays in its log: the checkpoint
    /// refers to it there, a restart reads it back, and a log file is
    /// freed only once the data still referred to in it has been moved
    /// into the checkpoint and flushed.
    #[test]
    fn big_data_stays_in_the_log_until_its_file_is_freed() {
        let dir = fresh_dir("refs");
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut zxid = 0;
        {
            let mut s = Store::open(&dir, &dir).unwrap();
            let mut tree = s.load().unwrap().tree;
            s.txlog.set_segment_bytes(64 << 10);
            // New nodes while big data is seldom rewritten: held as it is.
            let (p, _) = applied_group(
                &mut tree,
                &mut zxid,
                vec![create("/new", big.clone())],
                false,
            );
            s.commit(&mut [p]).unwrap();
            s.write_staged().unwrap();
            assert!(!valueref::is_ref(&stored(&s, "/new")));
            s.big_rewrites.assume(1.0);
            let txns = vec![
                create("/big", big.clone()),
                create("/small", vec![1; 100]),
                create("/hot", vec![0; 5000]),
            ];
            let (p, _) = applied_group(&mut tree, &mut zxid, txns, false);
            s.commit(&mut [p]).unwrap();
            s.write_staged().unwrap();
            assert!(valueref::is_ref(&stored(&s, "/big")));
            assert!(valueref::is_ref(&stored(&s, "/hot")));
            assert!(!valueref::is_ref(&stored(&s, "/small")));
            assert!(stored(&s, "/big").len() < 200);
            assert_eq!(s.refs.len(), 2);
        }
        let mut s = Store::open(&dir, &dir).unwrap();
        s.txlog.set_segment_bytes(64 << 10);
        s.big_rewrites.assume(1.0);
        let mut tree = s.load().unwrap().tree;
        assert_eq!(&tree.get("/big").unwrap().data[..], &big[..]);
        // /hot is rewritten until the log has rolled far past /big's file,
        // with checkpoint flushes (asked for as the log rolls) between.
        // Whenever /big's record refers into the log, the log has it.
        let big_zxid = BTreeSet::from([2]);
        let mut moved = false;
        for round in 0..150u8 {
            let (p, _) = applied_group(&mut tree, &mut zxid, vec![set("/hot", round, 6000)], false);
            s.commit(&mut [p]).unwrap();
            s.write_staged().unwrap();
            if valueref::is_ref(&stored(&s, "/big")) {
                s.txlog.read(&big_zxid).expect("/big's log record is kept");
            } else {
                moved = true;
            }
            if round % 5 == 4 {
                s.flush().unwrap();
            }
        }
        assert!(moved, "/big's data was moved into its record");
        s.flush().unwrap();
        let files = s.txlog.files();
        assert!((1..=HOLD_LOG_FILES + 1).contains(&files), "{files} files");
        assert!(
            valueref::is_ref(&stored(&s, "/hot")),
            "its last write is in the open file"
        );
        // Only /hot's last write is referred to now.
        assert_eq!(s.refs.len(), 1);
        assert_eq!(s.refs.held_below(Log::Txn), zxid as u64 - 1);
        drop(s);
        let mut s = Store::open(&dir, &dir).unwrap();
        let l = s.load().unwrap();
        assert_eq!(&l.tree.get("/big").unwrap().data[..], &big[..]);
        assert_eq!(&l.tree.get("/hot").unwrap().data[..], &[149u8; 6000][..]);
        assert_eq!(
            l.tree.get("/hot").unwrap().stat,
            tree.get("/hot").unwrap().stat
        );
        assert_eq!(&l.tree.get("/small").unwrap().data[..], &[1u8; 100][..]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A new standalone store in a fresh directory named for `name`, with
    /// 64 KiB log files, making references from its first write on.
    fn referring_store(name: &str) -> (std::path::PathBuf, Store, DataTree) {
        let dir = fresh_dir(name);
        let mut s = Store::open(&dir, &dir).unwrap();
        let tree = s.load().unwrap().tree;
        s.txlog.set_segment_bytes(64 << 10);
        s.big_rewrites.assume(1.0);
        (dir, s, tree)
    }

    /// A flush asked for before a move of data out of a log file does not
    /// free that file: the moved records are not in it, and a crash after
    /// it would leave references into a file that is gone.
    #[test]
    fn a_flush_asked_for_before_a_move_does_not_free_the_moved_file() {
        let (dir, mut s, mut tree) = referring_store("moveflush");
        let mut zxid = 0;
        let big = vec![9u8; 8000];
        let mut txns = vec![create("/big", big.clone())];
        // Logged and staged without `maintain`: no flush, no move yet.
        for round in 0..120u8 {
            let (mut p, _) = applied_group(&mut tree, &mut zxid, txns, false);
            let last = s.commit_log(std::slice::from_mut(&mut p)).unwrap();
            s.stage(
                std::slice::from_mut(&mut p),
                Some(last),
                Some((Log::Txn, 1..=last as u64)),
            )
            .unwrap();
            txns = vec![if round == 0 {
                create("/hot", vec![round; 6000])
            } else {
                set("/hot", round, 6000)
            }];
        }
        assert!(s.txlog.files() > HOLD_LOG_FILES + 1);
        assert!(valueref::is_ref(&stored(&s, "/big")));
        s.start_flush().unwrap();
        s.start_moving(HOLD_LOG_FILES, true).unwrap();
        while s.moving.is_some() {
            s.move_piece().unwrap();
        }
        assert!(!valueref::is_ref(&stored(&s, "/big")), "moved");
        for _ in 0..1000 {
            if s.unflushed_memtables().unwrap() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        s.maintain().unwrap();
        let big_zxid = BTreeSet::from([1]);
        assert!(
            s.txlog.read(&big_zxid).is_ok(),
            "kept: the flush did not hold the move"
        );
        s.flush().unwrap();
        assert!(
            s.txlog.read(&big_zxid).is_err(),
            "freed after a flush that holds the move"
        );
        assert!(s.txlog.files() <= HOLD_LOG_FILES + 1);
        drop(s);
        let mut s = Store::open(&dir, &dir).unwrap();
        let l = s.load().unwrap();
        assert_eq!(&l.tree.get("/big").unwrap().data[..], &big[..]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An idle server moves the data still referred to in closed log
    /// files, then frees them: the work references put off is done while
    /// nothing waits for it.
    #[test]
    fn an_idle_store_moves_referred_data_and_frees_the_closed_files() {
        let (dir, mut s, mut tree) = referring_store("idlemove");
        let mut zxid = 0;
        for i in 0..30u8 {
            let (p, _) = applied_group(
                &mut tree,
                &mut zxid,
                vec![create(&format!("/n{i}"), vec![i; 6000])],
                false,
            );
            s.commit(&mut [p]).unwrap();
        }
        assert!(s.txlog.files() > 2, "{} files", s.txlog.files());
        assert_eq!(s.refs.len(), 30, "nothing moved while writes come");
        // Not idle long enough yet: it waits, and moves nothing.
        assert!(matches!(s.idle(true), Idle::After(_)));
        assert_eq!(s.refs.len(), 30);
        s.last_write = Instant::now() - MOVE_WHEN_IDLE_FOR;
        for _ in 0..1000 {
            match s.idle(true) {
                Idle::Done => break,
                Idle::More => {}
                Idle::After(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert_eq!(s.txlog.files(), 1, "the closed files were freed");
        let open_file: Vec<_> = (0..30u8)
            .filter(|i| valueref::is_ref(&stored(&s, &format!("/n{i}"))))
            .collect();
        assert_eq!(
            s.refs.len(),
            open_file.len(),
            "only the open file's data is referred to"
        );
        assert!(open_file.len() < 11, "{open_file:?}");
        drop(s);
        let mut s = Store::open(&dir, &dir).unwrap();
        let l = s.load().unwrap();
        for i in 0..30u8 {
            assert_eq!(
                &l.tree.get(&format!("/n{i}")).unwrap().data[..],
                &[i; 6000][..]
            );
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    const BIG: [u8; 9000] = [7; 9000];

    /// Delivers txns at an ensemble member, one group each, its ZAB log
    /// compacted through them.
    struct Delivery {
        zxid: i64,
    }

    impl Delivery {
        fn txns(&mut self, s: &mut Store, tree: &mut DataTree, txns: Vec<Txn>) {
            use zkd_zab::peer::Persist as Z;
            let (p, proposals) = applied_group(tree, &mut self.zxid, txns, true);
            let zab = [
                Z::Append(proposals),
                Z::Applied(self.zxid as u64),
                Z::Compact(self.zxid as u64),
            ];
            let mut group = [p];
            assert!(s.commit_ensemble_log(&group, &zab, true).unwrap());
            s.commit_ensemble_tree(&mut group, &zab).unwrap();
        }
    }

    /// A fresh ensemble member's store (small ZAB log files, references
    /// made for all big data) with /big (`BIG`) and /hot (5,000 bytes)
    /// delivered as its first txn.
    fn member_with_big_data(name: &str) -> (std::path::PathBuf, Store, DataTree, Delivery) {
        use zkd_zab::peer::Persist as Z;
        let dir = fresh_dir(name);
        let mut s = Store::open(&dir.join("db"), &dir).unwrap();
        let mut tree = s.load().unwrap().tree;
        s.zablog.set_segment_bytes(64 << 10);
        s.big_rewrites.assume(1.0);
        s.commit_ensemble_log(&[], &[Z::AcceptedEpoch(1), Z::CurrentEpoch(1)], true)
            .unwrap();
        let mut deliver = Delivery { zxid: 0 };
        deliver.txns(
            &mut s,
            &mut tree,
            vec![Txn::Multi(vec![
                create("/big", BIG.to_vec()),
                create("/hot", vec![1; 5000]),
            ])],
        );
        (dir, s, tree, deliver)
    }

    /// An ensemble member's references point into ZAB's log: a snapshot
    /// for a learner carries the data itself, the ZAB log keeps a file
    /// until the data referred to in it is moved, and a snapshot installed
    /// replaces every reference.
    #[test]
    fn an_ensemble_members_refs_are_resolved_for_a_snapshot_and_moved_before_trimming() {
        use zkd_zab::peer::Persist as Z;
        let (dir, mut s, mut tree, mut deliver) = member_with_big_data("zabrefs");
        let big = BIG.to_vec();
        s.write_staged().unwrap();
        assert!(valueref::is_ref(&stored(&s, "/big")));
        let (_, state) = s.applied_state().unwrap();
        let rec = crate::ensemble::state::records(&state).unwrap();
        let key = node_key("/big");
        let (_, v) = rec.nodes.iter().find(|(k, _)| *k == &key[..]).unwrap();
        assert_eq!(
            *v,
            &tree.get("/big").unwrap().encode()[..],
            "the snapshot holds the data"
        );
        for round in 0..150u8 {
            deliver.txns(&mut s, &mut tree, vec![set("/hot", round, 6000)]);
            s.write_staged().unwrap();
            if valueref::is_ref(&stored(&s, "/big")) {
                s.zablog
                    .read(&BTreeSet::from([1]))
                    .expect("/big's log record is kept");
            }
        }
        for _ in 0..3 {
            s.flush().unwrap();
        }
        let files = s.zablog.files();
        assert!((1..=HOLD_LOG_FILES + 1).contains(&files), "{files} files");
        assert!(
            !valueref::is_ref(&stored(&s, "/big")),
            "moved before its file went"
        );
        let (_, state2) = s.applied_state().unwrap();
        assert_eq!(
            crate::ensemble::state::records(&state2)
                .unwrap()
                .nodes
                .len(),
            rec.nodes.len()
        );
        // A snapshot replaces the tree, and every reference with it.
        s.commit_ensemble_log(
            &[],
            &[Z::Snapshot {
                upto: 1,
                state: Arc::new(state.clone()),
                log: vec![],
            }],
            true,
        )
        .unwrap();
        assert_eq!(s.refs.len(), 0);
        drop(s);
        let mut s = Store::open(&dir.join("db"), &dir).unwrap();
        let l = s.load().unwrap();
        assert_eq!(&l.tree.get("/big").unwrap().data[..], &big[..]);
        assert_eq!(&l.tree.get("/hot").unwrap().data[..], &[1u8; 5000][..]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A leader's state for a SNAP is read in the background as it was
    /// when the read was asked for, whatever is written meanwhile; and
    /// while a read runs, no log file it might refer into is freed.
    #[test]
    fn a_state_read_in_the_background_is_as_asked_and_keeps_its_files() {
        let (dir, mut s, mut tree, mut deliver) = member_with_big_data("bgread");
        // Staged, not yet in RocksDB: the read writes it first.
        let before = tree.get("/hot").unwrap().encode();
        let (tx, rx) = std::sync::mpsc::channel();
        s.read_state_in_background(move |r| tx.send(r).unwrap())
            .unwrap();
        for round in 0..40u8 {
            deliver.txns(&mut s, &mut tree, vec![set("/hot", round, 6000)]);
        }
        s.flush().unwrap();
        let (at, state) = rx.recv().unwrap().unwrap();
        assert_eq!(at, 1);
        let rec = crate::ensemble::state::records(&state).unwrap();
        let get = |path: &str| {
            let key = node_key(path);
            rec.nodes
                .iter()
                .find(|(k, _)| *k == &key[..])
                .map(|(_, v)| v.to_vec())
                .unwrap()
        };
        assert_eq!(get("/hot"), before);
        assert_eq!(get("/big"), tree.get("/big").unwrap().encode());

        // A read in progress, as the thread that reads counts itself.
        let reading = Reading::start(&s.reading);
        let files = s.zablog.reader();
        assert!(valueref::is_ref(&stored(&s, "/big")));
        for round in 0..150u8 {
            deliver.txns(&mut s, &mut tree, vec![set("/hot", round, 6000)]);
        }
        for _ in 0..3 {
            s.flush().unwrap();
        }
        assert!(!valueref::is_ref(&stored(&s, "/big")), "moved meanwhile");
        files
            .read(&BTreeSet::from([1]))
            .expect("/big's log record is kept while a read runs");
        let kept = s.zablog.files();
        assert!(kept > HOLD_LOG_FILES + 1, "{kept} files");
        drop(reading);
        for _ in 0..3 {
            s.flush().unwrap();
        }
        let files = s.zablog.files();
        assert!((1..=HOLD_LOG_FILES + 1).contains(&files), "{files} files");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A learner's state is written from the batch prepared from that very
    /// state while the core decoded it, and only from that one.
    #[test]
    fn a_snapshot_is_written_from_its_own_prepared_batch_only() {
        use zkd_zab::peer::Persist as Z;
        // Two states at zxid 1: one holding /a, one holding /b.
        let state_with = |name: &str, path: &str| {
            let dir = fresh_dir(name);
            let mut s = Store::open(&dir.join("db"), &dir).unwrap();
            let mut tree = s.load().unwrap().tree;
            s.commit_ensemble_log(&[], &[Z::AcceptedEpoch(1), Z::CurrentEpoch(1)], true)
                .unwrap();
            let mut zxid = 0;
            let (p, proposals) =
                applied_group(&mut tree, &mut zxid, vec![create(path, vec![1])], true);
            let zab = [Z::Append(proposals), Z::Applied(1)];
            let mut group = [p];
            assert!(s.commit_ensemble_log(&group, &zab, true).unwrap());
            s.commit_ensemble_tree(&mut group, &zab).unwrap();
            let (_, state) = s.applied_state().unwrap();
            drop(s);
            let _ = std::fs::remove_dir_all(&dir);
            Arc::new(state)
        };
        let (a, b) = (state_with("prep-a", "/a"), state_with("prep-b", "/b"));
        // A state shared between the core and the storage thread.
        type Shared = Arc<Vec<u8>>;
        let installed = |name: &str, prepared: Option<(Shared, &Shared)>, state| {
            let dir = fresh_dir(name);
            let mut s = Store::open(&dir.join("db"), &dir).unwrap();
            s.commit_ensemble_log(&[], &[Z::AcceptedEpoch(1), Z::CurrentEpoch(1)], true)
                .unwrap();
            if let Some((label, from)) = prepared {
                // A batch built from `from`, filed as `label`'s.
                s.prepared = Some((1, label, s.install_batch(1, from).unwrap()));
            }
            let snap = Z::Snapshot {
                upto: 1,
                state,
                log: vec![],
            };
            assert!(!s.commit_ensemble_log(&[], &[snap], true).unwrap());
            assert!(
                s.prepared.is_none(),
                "a prepared batch outlives its install"
            );
            drop(s);
            let mut s = Store::open(&dir.join("db"), &dir).unwrap();
            let tree = s.load().unwrap().tree;
            let has = (tree.get("/a").is_some(), tree.get("/b").is_some());
            drop(s);
            let _ = std::fs::remove_dir_all(&dir);
            has
        };
        // The batch filed for this state is what is written (here, to
        // tell, one built from the other state).
        assert_eq!(
            installed("prep-1", Some((b.clone(), &a)), b.clone()),
            (true, false)
        );
        // A batch filed for another state is not: the state is written.
        assert_eq!(
            installed("prep-2", Some((a.clone(), &a)), b.clone()),
            (false, true)
        );
        assert_eq!(installed("prep-3", None, a.clone()), (true, false));
    }

    /// Blob garbage collection turns on when deletes leave most of the
    /// blob files garbage, frees them, and turns off again; this also
    /// proves the RocksDB property names (a wrong one reads as 0).
    #[test]
    fn blob_gc_runs_while_garbage_is_most_of_the_blob_files() {
        let dir = fresh_dir("blobgc");
        let mut s = Store::open(&dir, &dir).unwrap();
        s.blob_gc = BlobGc::new(0);
        // Data that LZ4 cannot shrink, so the files' sizes follow it.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut value = || {
            (0..8192)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<u8>>()
        };
        // Four blob files (one per flush): the oldest of them, the one
        // garbage collection may move values out of, holds 100 nodes.
        for (file, count) in [(0, 100), (1, 10), (2, 10), (3, 10)] {
            for i in 0..count {
                let key = node_key(&format!("/f{file}/n{i}"));
                s.db.put_cf_opt(s.nodes(), key, value(), &unlogged())
                    .unwrap();
            }
            s.db.flush_cf(s.nodes()).unwrap();
        }
        for i in 0..95 {
            let key = node_key(&format!("/f0/n{i}"));
            s.db.delete_cf_opt(s.nodes(), key, &unlogged()).unwrap();
        }
        s.db.flush_cf(s.nodes()).unwrap();
        let full = rocksdb::CompactOptions::default();
        s.db.compact_range_cf_opt(s.nodes(), None::<&[u8]>, None::<&[u8]>, &full);
        let files = |s: &Store| {
            s.db.property_int_value_cf(s.nodes(), "rocksdb.live-blob-file-size")
                .unwrap()
                .unwrap()
        };
        let before = files(&s);
        s.steer_blob_gc().unwrap();
        assert!(s.blob_gc.is_on(), "95 of 130 nodes' blobs are garbage");
        // Collection moves the 5 live nodes out of the oldest file, which
        // then goes.
        s.db.compact_range_cf_opt(s.nodes(), None::<&[u8]>, None::<&[u8]>, &full);
        let after = files(&s);
        assert!(
            after * 2 < before,
            "{before} -> {after} bytes of blob files"
        );
        s.steer_blob_gc().unwrap();
        assert!(!s.blob_gc.is_on(), "nothing left to collect");
        for i in 95..100 {
            let key = node_key(&format!("/f0/n{i}"));
            assert_eq!(s.db.get_cf(s.nodes(), key).unwrap().unwrap().len(), 8192);
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A crash between the log's sync and a checkpoint flush leaves txns in
    /// the log only: the next start redoes them, and writes them to the
    /// checkpoint so a later start finds them there.
    #[test]
    fn logged_txns_the_checkpoint_lacks_are_redone_at_start() {
        let dir = fresh_dir("redo");
        {
            let mut s = Store::open(&dir, &dir).unwrap();
            assert_eq!(s.load().unwrap().last_zxid, 0);
            let open = Txn::CreateSession {
                timeout_ms: 4000,
                passwd: [3; 16],
            };
            let create = Txn::Create {
                path: "/a".into(),
                data: b"v".to_vec().into(),
                acl: Acl::open_unsafe(),
                ephemeral_owner: 7,
                parent_cversion: 1,
            };
            s.txlog.append(1, &entry(7, 1, &open)).unwrap();
            s.txlog.append(2, &entry(7, 2, &create)).unwrap();
            s.txlog.append(3, &entry(9, 3, &open)).unwrap();
            s.txlog.append(4, &entry(9, 4, &Txn::CloseSession)).unwrap();
            s.txlog.sync().unwrap();
        }
        let check = |l: &Loaded| {
            assert_eq!(l.last_zxid, 4);
            let a = l.tree.get("/a").expect("the logged create was redone");
            assert_eq!((&a.data[..], a.stat.ephemeral_owner), (b"v".as_slice(), 7));
            let ids: Vec<i64> = l.sessions.iter().map(|s| s.id).collect();
            assert_eq!(ids, vec![7], "session 9 was opened and closed");
        };
        {
            let mut s = Store::open(&dir, &dir).unwrap();
            assert_eq!(s.replay.len(), 4);
            check(&s.load().unwrap());
            s.flush().unwrap();
        }
        let mut s = Store::open(&dir, &dir).unwrap();
        assert!(s.replay.is_empty(), "the checkpoint holds the redone txns");
        check(&s.load().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An ensemble member flushes its checkpoint for a compaction of its
    /// ZAB log only when that frees a log file, and those flushes let
    /// RocksDB delete its WAL files although the epochs sit in them.
    #[test]
    fn a_zab_compaction_flushes_the_checkpoint_once_it_frees_a_file() {
        use zkd_zab::peer::Persist as Z;
        let dir = fresh_dir("compact");
        let db = dir.join("db");
        let mut s = Store::open(&db, &dir).unwrap();
        s.load().unwrap();
        s.zablog.set_segment_bytes(8 << 10);
        s.commit_ensemble_log(&[], &[Z::AcceptedEpoch(1), Z::CurrentEpoch(1)], true)
            .unwrap();
        let wals = || {
            std::fs::read_dir(&db)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
                .count()
        };
        let settle = |s: &mut Store| {
            for _ in 0..1000 {
                if s.flushing.is_none() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                s.commit_ensemble_tree(&mut [], &[]).unwrap();
            }
            panic!("a checkpoint flush did not finish in 10 s");
        };
        let mut zxid = 0u64;
        let mut flushes = 0;
        for round in 0..12 {
            // 3 KiB txns: the log rolls every few of them.
            let txns: Vec<_> = (0..2)
                .map(|_| {
                    zxid += 1;
                    zkd_zab::types::Txn {
                        zxid,
                        data: std::sync::Arc::new(vec![round as u8; 3 << 10]),
                    }
                })
                .collect();
            let zab = [Z::Append(txns), Z::Applied(zxid), Z::Compact(zxid - 1)];
            s.commit_ensemble_log(&[], &zab, true).unwrap();
            let frees = s.zablog.frees_through(zxid - 1);
            s.commit_ensemble_tree(&mut [], &zab).unwrap();
            assert_eq!(
                s.flushing.is_some(),
                frees,
                "round {round}: a flush is asked for exactly when it frees a log file"
            );
            flushes += frees as usize;
            settle(&mut s);
            assert!(
                s.zablog.files() <= 2,
                "round {round}: the flushed base trimmed the log"
            );
        }
        assert!(
            flushes >= 4,
            "the log rolled and was trimmed ({flushes} flushes)"
        );
        let mut left = wals();
        for _ in 0..500 {
            if left <= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            left = wals();
        }
        assert!(
            left <= 2,
            "{left} RocksDB WAL files after {flushes} flushes"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A log record the checkpoint cannot take is damage, not something to
    /// skip.
    #[test]
    fn a_logged_txn_that_does_not_apply_is_refused() {
        let dir = fresh_dir("bad");
        {
            let mut s = Store::open(&dir, &dir).unwrap();
            s.load().unwrap();
            let del = Txn::Delete {
                path: "/nope".into(),
            };
            s.txlog.append(1, &entry(7, 1, &del)).unwrap();
            s.txlog.sync().unwrap();
        }
        let mut s = Store::open(&dir, &dir).unwrap();
        let err = s.load().err().expect("refused");
        assert!(err.0.contains("does not apply"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store from before the transaction log (sessions, last_zxid and
    /// both logs in RocksDB) opens with everything where it now lives.
    #[test]
    fn a_store_of_the_earlier_layout_is_moved_on_open() {
        let dir = fresh_dir("old");
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let cfs = [CF_NODES, CF_OLD_SESSIONS, CF_OLD_LOG, CF_OLD_ZAB_LOG];
            let db = DB::open_cf_descriptors(
                &opts,
                &dir,
                cfs.iter()
                    .map(|n| ColumnFamilyDescriptor::new(*n, Options::default())),
            )
            .unwrap();
            let cf = |n| db.cf_handle(n).unwrap();
            for (p, n) in DataTree::new().iter() {
                db.put_cf(cf(CF_NODES), node_key(p), n.encode()).unwrap();
            }
            let sess = zkd_core::server::encode_session(4000, &[1; 16]);
            db.put_cf(cf(CF_OLD_SESSIONS), 7i64.to_be_bytes(), sess)
                .unwrap();
            db.put_cf(cf(CF_OLD_LOG), 5i64.to_be_bytes(), b"old")
                .unwrap();
            for z in 4u64..=6 {
                db.put_cf(cf(CF_OLD_ZAB_LOG), z.to_be_bytes(), [z as u8])
                    .unwrap();
            }
            db.put(KEY_LOG_BASE, 4u64.to_be_bytes()).unwrap();
            db.put(KEY_OLD_LAST_ZXID, 5i64.to_be_bytes()).unwrap();
        }
        for _ in 0..2 {
            let mut s = Store::open(&dir, &dir).unwrap();
            let l = s.load().unwrap();
            assert_eq!(l.last_zxid, 5);
            assert_eq!(l.sessions.iter().map(|s| s.id).collect::<Vec<_>>(), vec![7]);
            let z = s.load_zab(5).unwrap();
            assert_eq!(z.base, 4);
            assert_eq!(
                z.log
                    .iter()
                    .map(|t| (t.zxid, t.data.to_vec()))
                    .collect::<Vec<_>>(),
                vec![(5, vec![5]), (6, vec![6])]
            );
            assert!(s.db.get(KEY_OLD_LAST_ZXID).unwrap().is_none());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
