//! Ensemble mode: the runtime side of ZAB. The protocol itself is the pure
//! `zkd_zab::peer::Peer`; what it means for zkd's tree is
//! `zkd_core::server::replica`. This module only carries out what they
//! decide:
//!
//! - `wire`      — frames between members (ZAB messages, forwarded requests).
//! - `state`     — the applied state (tree + sessions) a SNAP carries.
//! - `transport` — TCP links to every peer, with loss reported.
//! - `hold`      — a learner's stream held behind the SNAP the leader is
//!   reading the state for.
//! - `link`      — one link's send queue, which the storage thread may
//!   also send a learner's acks on, right after their sync.
//! - `driver`    — feeds the peer messages, ticks and client writes, and
//!   executes its outputs in order: sends, persists with sync barriers (on
//!   the storage thread), deliveries (applied to the tree, releasing held
//!   replies), role changes.
//! - `pending`   — the outputs waiting behind a barrier; a sync takes the
//!   appends queued after it into its write (group commit).

pub mod driver;
pub mod hold;
pub mod link;
pub mod pending;
pub mod state;
pub mod transport;
pub mod wire;

use std::collections::VecDeque;
use std::net::ToSocketAddrs;

use tokio::sync::mpsc;
use zkd_core::server::{Forward, Persist};
use zkd_zab::peer::{Config as ZabConfig, Durable, Peer};

use crate::runtime::Core;
use crate::storage::{Loaded, Store};
use transport::{PeerAddr, PeerEvent, Transport};

/// ZooKeeper's defaults when zoo.cfg leaves them out.
const INIT_LIMIT_DEFAULT: u32 = 10;
const SYNC_LIMIT_DEFAULT: u32 = 5;
/// How long an election result must stand before it is acted on
/// (ZooKeeper's finalizeWait).
const FINALIZE_WAIT_MS: u64 = 200;

pub struct Zab {
    pub peer: Peer,
    pub(crate) transport: Transport,
    /// Taken by the core loop.
    pub(crate) events: Option<mpsc::UnboundedReceiver<PeerEvent>>,
    /// For what the core hears from other threads about a peer (a SNAP's
    /// state read in the background).
    pub(crate) events_tx: mpsc::UnboundedSender<PeerEvent>,
    /// Peer outputs not yet carried out (waiting behind a sync barrier).
    pub(crate) pending: pending::Pending,
    pub(crate) job_tree: Vec<Persist>,
    pub(crate) job_zab: Vec<zkd_zab::peer::Persist>,
    /// Something was written without sync since the last synced write.
    pub(crate) unsynced: bool,
    /// Since when `job_tree`/`job_zab` (the checkpoint only) have waited
    /// for the next write (`checkpoint_can_wait` in `driver`).
    pub(crate) deferred_since: Option<std::time::Instant>,
    /// The sync barrier in flight, by ticket.
    pub(crate) waiting: Option<i64>,
    /// Leader: its own ack asked for (`Output::SyncThenAck`), up to this
    /// zxid, not yet in a synced write...
    pub(crate) own_ack: Option<u64>,
    /// ...and those in synced writes not yet answered, by ticket.
    pub(crate) own_acks: VecDeque<(i64, u64)>,
    pub(crate) next_ticket: i64,
    /// Leader: tree changes of txns prepared but not yet delivered, by zxid.
    pub(crate) stash: VecDeque<(i64, Persist)>,
    /// Clients are being served (leading an established epoch, or synced).
    pub serving: bool,
    /// Established as leader; takes effect once the queue has drained.
    pub(crate) pending_epoch: Option<u64>,
    /// Forwarded requests that arrived before this leader took its role.
    pub(crate) early: Vec<Forward>,
    /// Wall-clock ms at start-up: ZAB's clock is this plus monotonic time,
    /// so it never goes back and differs across restarts.
    pub(crate) clock_base: u64,
    pub(crate) last_touch_ms: u64,
    /// When the last quorum frame arrived, and ticks seen: for the reason
    /// logged when this member starts looking.
    pub(crate) last_frame: Option<std::time::Instant>,
    pub(crate) last_tick: Option<std::time::Instant>,
    /// When this server last entered an election (ms on ZAB's clock).
    pub(crate) looking_since: Option<u64>,
}

/// Decides from the store whether this server may run as configured, and
/// returns ZAB's durable state in ensemble mode.
pub fn check_store(
    store: &mut Store,
    ensemble: bool,
    loaded: &Loaded,
) -> Result<Option<Durable>, String> {
    let was_ensemble = store.is_ensemble().map_err(|e| e.to_string())?;
    if !ensemble {
        if was_ensemble {
            return Err(
                "this data directory belongs to an ensemble member (it holds a ZAB log); \
                        add the server.N lines back, or use an empty dataDir"
                    .into(),
            );
        }
        return Ok(None);
    }
    if !was_ensemble && loaded.last_zxid > 0 {
        return Err(format!(
            "this data directory holds standalone data (last zxid 0x{:x}); an ensemble member must \
             start from an empty dataDir, or from one that was already in this ensemble",
            loaded.last_zxid
        ));
    }
    let d = store
        .load_zab(loaded.last_zxid)
        .map_err(|e| e.to_string())?;
    let last = d.log.last().map(|t| t.zxid).unwrap_or(d.base);
    if (last as i64) < loaded.last_zxid {
        return Err(format!(
            "the tree is at 0x{:x} but the ZAB log ends at 0x{last:x}",
            loaded.last_zxid
        ));
    }
    Ok(Some(d))
}

fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} has no address"))
}

/// Binds our peer ports, starts the transport and the ZAB peer.
pub fn start(core: &mut Core, durable: Durable) -> Result<(), String> {
    let cfg = core.cfg.clone();
    let me = cfg.my_id;
    let spec = cfg
        .servers
        .iter()
        .find(|s| s.id == me)
        .ok_or_else(|| format!("myid is {me} but zoo.cfg has no server.{me} line"))?;
    let voters: Vec<u64> = cfg
        .servers
        .iter()
        .filter(|s| !s.observer)
        .map(|s| s.id)
        .collect();
    let observers: Vec<u64> = cfg
        .servers
        .iter()
        .filter(|s| s.observer)
        .map(|s| s.id)
        .collect();
    if voters.is_empty() {
        return Err("zoo.cfg has server.N lines but no voting member".into());
    }
    if voters.len().is_multiple_of(2) {
        log::warn!(
            "{} voting members: an even ensemble tolerates no more failures than one member fewer",
            voters.len()
        );
    }
    let mut addrs = Vec::new();
    for s in &cfg.servers {
        addrs.push(PeerAddr {
            id: s.id,
            election: resolve(&s.host, s.election_port)?,
            quorum: resolve(&s.host, s.quorum_port)?,
        });
    }
    let mine = addrs
        .iter()
        .find(|a| a.id == me)
        .expect("checked above")
        .clone();
    let bind = |a: std::net::SocketAddr| -> Result<tokio::net::TcpListener, String> {
        let sock = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| e.to_string())?;
        sock.set_reuseaddr(true).map_err(|e| e.to_string())?;
        sock.bind(a)
            .map_err(|e| format!("cannot listen on {a}: {e}"))?;
        sock.listen(128)
            .map_err(|e| format!("cannot listen on {a}: {e}"))
    };
    let election = bind(mine.election)?;
    let quorum = bind(mine.quorum)?;
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let known: Vec<u64> = cfg.servers.iter().map(|s| s.id).collect();
    tokio::spawn(transport::accept(election, known.clone(), ev_tx.clone()));
    tokio::spawn(transport::accept(quorum, known, ev_tx.clone()));
    let transport = Transport::start(me, &addrs, ev_tx.clone());
    let zcfg = ZabConfig {
        id: me,
        voters,
        observers,
        tick_ms: cfg.tick_time_ms as u64,
        init_limit: cfg.init_limit.unwrap_or(INIT_LIMIT_DEFAULT) as u64,
        sync_limit: cfg.sync_limit.unwrap_or(SYNC_LIMIT_DEFAULT) as u64,
        finalize_wait_ms: FINALIZE_WAIT_MS.min(cfg.tick_time_ms as u64),
        broken_ack_before_sync: false,
        snap_count: cfg.snap_count,
        snap_bytes: cfg.snap_size_limit_bytes,
        log_keep: cfg.commit_log_count,
    };
    let clock_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    log::info!(
        "event=ensemble_start id={me} role={} voters={:?} observers={:?} accepted_epoch={} current_epoch={} log_txns={} log_base=0x{:x} applied=0x{:x} quorum={} election={}",
        if spec.observer { "observer" } else { "participant" },
        zcfg.voters,
        zcfg.observers,
        durable.accepted_epoch,
        durable.current_epoch,
        durable.log.len(),
        durable.base,
        durable.applied,
        mine.quorum,
        mine.election
    );
    let mut peer = Peer::new(zcfg, durable, clock_base);
    // `Peer::new` starts looking and has votes to send.
    let mut pending = pending::Pending::default();
    pending.push(peer.step(zkd_zab::peer::Input::Tick(clock_base)));
    let now = core.clock.now();
    core.server
        .set_role(zkd_core::server::Role::Learner, 0, now);
    let _ = core.server.take_effects();
    core.zab = Some(Zab {
        peer,
        transport,
        events: Some(ev_rx),
        events_tx: ev_tx,
        pending,
        job_tree: Vec::new(),
        job_zab: Vec::new(),
        unsynced: false,
        deferred_since: None,
        waiting: None,
        own_ack: None,
        own_acks: VecDeque::new(),
        next_ticket: 1,
        stash: VecDeque::new(),
        serving: false,
        pending_epoch: None,
        early: Vec::new(),
        clock_base,
        last_touch_ms: 0,
        last_frame: None,
        last_tick: None,
        looking_since: Some(clock_base),
    });
    Ok(())
}
