//! Moving data between Apache ZooKeeper and zkd.
//!
//! - `zkformat` — ZooKeeper's snapshot and transaction log formats.
//! - `zkd import SRC zoo.cfg`: reads a ZooKeeper data directory (the newest
//!   readable snapshot plus the logs after it, or a single snapshot file) and
//!   writes the tree, ACLs and sessions into the empty zkd store of zoo.cfg's
//!   dataDir. Sessions keep their ids, timeouts and ZooKeeper's passwords, so
//!   clients reconnect with the sessions they had.
//! - `zkd export zoo.cfg OUT`: writes zkd's tree and sessions as a ZooKeeper
//!   snapshot file, which `zkd import` reads back.

pub mod zkformat;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use zkd_core::record::NodeRecord;
use zkd_core::server::{encode_session, Persist};
use zkd_core::tree::{DataTree, Node};

use crate::config::Config;
use crate::storage::Store;
use zkd_core::txn::Txn;
use zkformat::{LogEntry, SnapNode, Snapshot};

#[derive(Debug, Default)]
pub struct Summary {
    pub snapshot: Option<PathBuf>,
    pub snapshot_zxid: i64,
    pub logs: usize,
    pub txns_applied: usize,
    pub txns_skipped: usize,
    pub torn_tail: Option<String>,
    pub nodes: usize,
    pub sessions: usize,
    pub last_zxid: i64,
}

/// Progress on standard error: a bar on a terminal, a line per 10% otherwise.
struct Progress {
    what: &'static str,
    total: usize,
    tty: bool,
    shown: usize,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Progress {
        Progress {
            what,
            total: total.max(1),
            tty: std::io::stderr().is_terminal(),
            shown: usize::MAX,
        }
    }

    fn at(&mut self, done: usize) {
        let pct = done * 100 / self.total;
        if self.tty {
            if pct != self.shown {
                let bar = "#".repeat(pct / 4) + &" ".repeat(25 - pct / 4);
                eprint!(
                    "\r{:<10} [{bar}] {pct:3}% ({done}/{})",
                    self.what, self.total
                );
                self.shown = pct;
            }
        } else if pct / 10 != self.shown {
            eprintln!("{}: {pct}% ({done}/{})", self.what, self.total);
            self.shown = pct / 10;
        }
    }

    fn done(&mut self) {
        self.at(self.total);
        if self.tty {
            eprintln!();
        }
    }
}

/// `snapshot.<hex zxid>` / `log.<hex zxid>` → zxid.
fn zxid_of(name: &str, prefix: &str) -> Option<i64> {
    let hex = name.strip_prefix(prefix)?;
    i64::from_str_radix(hex, 16).ok()
}

fn files(dir: &Path, prefix: &str) -> Result<Vec<(i64, PathBuf)>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut v: Vec<(i64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            zxid_of(&name, prefix).map(|z| (z, e.path()))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Applies one replayed txn; false when the tree already reflects it (a
/// fuzzy snapshot) or it cannot apply, which ZooKeeper's replay tolerates too.
fn apply(
    tree: &mut DataTree,
    sessions: &mut std::collections::BTreeMap<i64, i32>,
    e: &LogEntry,
    t: &Txn,
) -> bool {
    match t {
        Txn::CreateSession { timeout_ms, .. } => {
            sessions.insert(e.session, *timeout_ms);
        }
        Txn::CloseSession => {
            sessions.remove(&e.session);
        }
        _ => {}
    }
    let hdr = zkd_core::txn::TxnHeader {
        session: e.session,
        cxid: 0,
        zxid: e.zxid,
        time: e.time,
    };
    zkd_core::apply::apply_tree(tree, &hdr, t)
}

fn tree_from(snap: &Snapshot) -> DataTree {
    let mut tree = DataTree::empty();
    for n in &snap.nodes {
        let acl = tree.intern_acl(n.acl.clone());
        tree.insert_loaded(n.path.clone(), Node::new(n.data.clone(), acl, n.stat));
    }
    tree.link_children();
    tree
}

/// Reads ZooKeeper data (a data directory, its version-2 directory, or one
/// snapshot file) into a tree, sessions and a last zxid.
pub fn read_zookeeper(src: &Path) -> Result<Imported, String> {
    let mut sum = Summary::default();
    let (snaps, logs) = if src.is_file() {
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        (
            vec![(zxid_of(&name, "snapshot.").unwrap_or(0), src.to_path_buf())],
            Vec::new(),
        )
    } else {
        let dir = if src.join("version-2").is_dir() {
            src.join("version-2")
        } else {
            src.to_path_buf()
        };
        (files(&dir, "snapshot.")?, files(&dir, "log.")?)
    };
    if snaps.is_empty() && logs.is_empty() {
        return Err(format!(
            "{}: no ZooKeeper snapshot or log files (snapshot.*, log.*) found",
            src.display()
        ));
    }
    // The newest snapshot that reads cleanly, as ZooKeeper itself chooses.
    let mut snapshot = None;
    for (z, p) in snaps.iter().rev() {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        match zkformat::read_snapshot(&bytes) {
            Ok(s) => {
                snapshot = Some((*z, p.clone(), s));
                break;
            }
            Err(e) => log::warn!("{}: {e}; trying an older snapshot", p.display()),
        }
    }
    if snapshot.is_none() && !snaps.is_empty() {
        return Err("no snapshot could be read; refusing to rebuild from logs alone".into());
    }
    let (mut tree, mut sessions, snap_zxid) = match &snapshot {
        Some((z, p, s)) => {
            sum.snapshot = Some(p.clone());
            (tree_from(s), s.sessions.iter().copied().collect(), *z)
        }
        None => (DataTree::new(), std::collections::BTreeMap::new(), 0),
    };
    sum.snapshot_zxid = snap_zxid;
    let mut last = snap_zxid;
    // Logs that may hold txns after the snapshot: the last one starting at or
    // before it, and every later one.
    let first = logs.iter().rposition(|(z, _)| *z <= snap_zxid).unwrap_or(0);
    let mut entries = Vec::new();
    for (_, p) in &logs[first.min(logs.len())..] {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let (es, torn) =
            zkformat::read_txn_log(&bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        sum.logs += 1;
        entries.extend(es);
        if let Some(t) = torn {
            sum.torn_tail = Some(format!("{}: {t}", p.display()));
            break; // nothing after a torn entry can be trusted
        }
    }
    let mut progress = Progress::new("replaying", entries.len());
    for (i, e) in entries.iter().enumerate() {
        if e.zxid <= last {
            continue;
        }
        tree.begin();
        if apply(&mut tree, &mut sessions, e, &e.txn) {
            sum.txns_applied += 1;
        } else {
            sum.txns_skipped += 1;
        }
        tree.commit();
        last = e.zxid;
        if i % 1024 == 0 {
            progress.at(i);
        }
    }
    progress.done();
    sum.last_zxid = last;
    sum.nodes = tree.node_count();
    sum.sessions = sessions.len();
    Ok((tree, sessions.into_iter().collect(), sum))
}

/// The tree, the open sessions (id, timeout) and what was done to get them.
pub type Imported = (DataTree, Vec<(i64, i32)>, Summary);

pub fn import(src: &Path, cfg: &Config) -> Result<Summary, String> {
    let db = cfg.data_dir.join("zkd.db");
    if db.exists()
        && std::fs::read_dir(&db)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(format!(
            "{} already holds a zkd store: import only into an empty dataDir",
            db.display()
        ));
    }
    let txnlog = cfg.data_log_dir.join(crate::storage::TXNLOG_DIR);
    if std::fs::read_dir(&txnlog).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} already holds a transaction log: import only into an empty dataDir and dataLogDir",
            txnlog.display()
        ));
    }
    let (tree, sessions, sum) = read_zookeeper(src)?;
    let mut store = Store::open(&db, &cfg.data_log_dir).map_err(|e| e.to_string())?;
    let mut p = Persist {
        last_zxid: sum.last_zxid.max(1),
        ..Default::default()
    };
    let mut progress = Progress::new("writing", tree.node_count());
    for (i, (path, node)) in tree.iter().enumerate() {
        p.nodes
            .push((path.to_string(), Some(NodeRecord::Whole(node.encode()))));
        if i % 4096 == 0 {
            progress.at(i);
        }
    }
    progress.done();
    for (id, to) in &sessions {
        let passwd = zkformat::session_password(*id);
        p.sessions.push((*id, Some(encode_session(*to, &passwd))));
    }
    store.commit(&mut [p]).map_err(|e| e.to_string())?;
    // An import has no log to redo it from: make the tree itself durable.
    store.flush().map_err(|e| e.to_string())?;
    Ok(sum)
}

/// zkd's store as a ZooKeeper snapshot (nodes in pre-order from "/").
pub fn export(cfg: &Config, out: &Path) -> Result<(PathBuf, usize), String> {
    let db = cfg.data_dir.join("zkd.db");
    if !db.exists() {
        return Err(format!("{}: no zkd store here", db.display()));
    }
    let mut store = Store::open(&db, &cfg.data_log_dir)
        .map_err(|e| format!("{e} (is zkd running on this dataDir? stop it first)"))?;
    let loaded = store.load().map_err(|e| e.to_string())?;
    let tree = &loaded.tree;
    let mut nodes = Vec::with_capacity(tree.node_count());
    let mut stack = vec!["/".to_string()];
    while let Some(p) = stack.pop() {
        let Some(n) = tree.get(&p) else { continue };
        nodes.push(SnapNode {
            path: p.clone(),
            data: n.data.to_vec(),
            acl: (*n.acl).clone(),
            stat: n.stat,
        });
        let children: Vec<&str> = tree.children(&p).collect();
        for c in children.into_iter().rev() {
            stack.push(zkd_core::path::join(&p, c));
        }
    }
    let snap = Snapshot {
        sessions: loaded
            .sessions
            .iter()
            .map(|s| (s.id, s.timeout_ms))
            .collect(),
        nodes,
    };
    let path = if out.is_dir() {
        out.join(format!("snapshot.{:x}", loaded.last_zxid))
    } else {
        out.to_path_buf()
    };
    std::fs::write(&path, zkformat::write_snapshot(&snap))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, snap.nodes.len()))
}
