//! A seeded, replayable simulation of a whole ensemble: simulated time and
//! network (delay, loss, duplication, reordering of votes, per-link FIFO for
//! streams, partitions), crashes and restarts, and a simulated disk that keeps
//! only what was synced. After every step it checks the invariants of zab.md:
//! - one established leader per epoch;
//! - prefix agreement: every peer delivers the same txns in the same order;
//! - integrity: only proposed txns are delivered;
//! - primary order: delivered zxids only grow;
//! - snapshots: the state a leader sends is exactly its delivered prefix at
//!   the SNAP's `upto`, and installing it keeps a learner on that prefix.
//!
//! The application's state is modelled as the length of the delivered
//! prefix (every peer's delivered txns are checked against one global
//! sequence), so a snapshot is that length. Logs are compacted often (small
//! `snap_count`, chosen per seed) so SNAPs with state happen in most runs.
//!
//! At the end, with the faults healed, it checks that every peer catches up
//! and no acknowledged write is missing anywhere. A failure names its seed;
//! the same seed replays the same run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::peer::{Config, Durable, Envelope, Input, Output, Peer, Persist};
use crate::types::*;

#[derive(Debug, Clone)]
pub struct Faults {
    /// Per message: lost (streams see a gap and reconnect).
    pub drop: f64,
    pub duplicate: f64,
    pub max_delay_ms: u64,
    /// Per step: a running peer crashes (losing unsynced writes).
    pub crash: f64,
    /// Per step: a crash in the middle of a step's outputs.
    pub crash_mid_step: f64,
    /// Per step: a partition starts (or the current one heals).
    pub partition: f64,
    /// Per step: every peer loses power at once (unsynced writes lost
    /// everywhere), coming back one by one in random order.
    pub power_failure: f64,
    /// Per step: a client write is offered to a leader.
    pub write: f64,
    /// An fsync takes 1 to this many simulated ms.
    pub fsync_ms_max: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop: 0.01,
            duplicate: 0.01,
            max_delay_ms: 30,
            crash: 0.002,
            crash_mid_step: 0.002,
            partition: 0.002,
            power_failure: 0.002,
            write: 0.3,
            fsync_ms_max: 5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub voters: usize,
    pub observers: usize,
    pub seed: u64,
    /// Simulated milliseconds of faulty running before the healing phase.
    pub duration_ms: u64,
    pub faults: Faults,
    /// Run a deliberately broken peer (ACK before fsync) to show that the
    /// simulation catches a durability violation. Never set outside tests.
    pub broken_ack_before_sync: bool,
}

/// What a run saw, for reports and assertions.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub steps: u64,
    pub committed: usize,
    pub acked_writes: usize,
    pub crashes: u64,
    pub partitions: u64,
    pub power_failures: u64,
    pub elections: u64,
    pub epochs: u64,
    /// Simulated ms from each leader loss to the next established leader.
    pub failover_ms: Vec<u64>,
    /// SNAPs (with state) sent to learners.
    pub snapshots: u64,
    /// Txns a learner delivered before any COMMIT (UPTODATE, INFORM)
    /// covering them reached it: on the leader's word that its log holds
    /// them (`Msg::Logged`).
    pub early_deliveries: u64,
    /// Txns a learner delivered on a COMMIT while a sync of its own log
    /// was still in progress (`Output::may_pass_sync`).
    pub past_syncs: u64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64: small, fast, and the same on every platform.
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 1.0 < p
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Writes a leader may have proposed and not yet delivered before clients
/// wait (ZooKeeper bounds them too: each client's window, the server's
/// outstanding limit). Without a bound a leader, which does not wait for
/// its own fsync, outruns followers whose simulated fsyncs are not grouped,
/// and a run measures a growing backlog instead of the protocol.
const WRITES_IN_FLIGHT: u64 = 16;

#[derive(Default, Clone)]
struct Disk {
    durable: Durable,
    pending: std::collections::VecDeque<Persist>,
    /// Writes ever queued (so an `Output::SyncThenAck` syncs exactly the
    /// writes queued before it); all but `pending` are durable or lost.
    queued: u64,
}

impl Disk {
    fn apply(d: &mut Durable, p: Persist) {
        match p {
            Persist::AcceptedEpoch(e) => d.accepted_epoch = e,
            Persist::CurrentEpoch(e) => d.current_epoch = e,
            Persist::Append(t) => d.log.extend(t),
            Persist::Applied(z) => d.applied = d.applied.max(z),
            Persist::Compact(b) => {
                d.log.retain(|t| t.zxid > b);
                d.base = d.base.max(b);
            }
            Persist::Snapshot { upto, log, .. } => {
                d.applied = upto;
                d.base = upto;
                d.log = log;
            }
        }
    }
    fn push(&mut self, p: Persist) {
        self.pending.push_back(p);
        self.queued += 1;
    }
    /// Makes the writes queued before the `upto`th durable, in order.
    fn sync_upto(&mut self, upto: u64) {
        while self.queued - (self.pending.len() as u64) < upto {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            Self::apply(&mut self.durable, p);
        }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum EventKind {
    Tick,
    Msg,
    Restart,
    /// An fsync finished, for the peer's incarnation with this number, of
    /// the writes queued before it (`Disk::queued` when asked): what passed
    /// it while it ran is not covered.
    SyncDone(u64, u64),
    /// An `Output::SyncThenAck` fsync finished: incarnation, the writes it
    /// covers (`Disk::queued` when asked), the zxid to report.
    AckSynced(u64, u64, Zxid),
}

/// What happens at a (time, sequence) slot: to whom, and the message if any.
type Event = (EventKind, Id, Option<(Id, Envelope)>);

pub struct Sim {
    cfg: SimConfig,
    ids: Vec<Id>,
    voters: Vec<Id>,
    observers: Vec<Id>,
    peers: BTreeMap<Id, Peer>,
    disks: BTreeMap<Id, Disk>,
    delivered: BTreeMap<Id, usize>,
    now: u64,
    rng: Rng,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    link_free_at: BTreeMap<(Id, Id), u64>,
    cut: BTreeSet<(Id, Id)>,
    global: Vec<Txn>,
    proposed: BTreeSet<Vec<u8>>,
    acked: Vec<Vec<u8>>,
    /// Per peer, the highest zxid a COMMIT, UPTODATE or INFORM told it of.
    told_committed: BTreeMap<Id, Zxid>,
    leaders: BTreeMap<u64, Id>,
    writes: u64,
    leader_lost_at: Option<u64>,
    pub report: Report,
    tick_ms: u64,
    queues: BTreeMap<Id, VecDeque<Output>>,
    /// Peers with a sync in progress, and the acks right behind it, sent
    /// when it ends (zkd's storage thread sends those itself, so they do
    /// not hold back what may pass the sync).
    syncing: BTreeMap<Id, Vec<(Id, Envelope)>>,
    generation: BTreeMap<Id, u64>,
    /// Compaction settings of this run.
    snap: (usize, usize, usize),
}

pub fn run(cfg: SimConfig) -> Result<Report, String> {
    let mut s = Sim::new(cfg);
    s.run()?;
    Ok(s.report)
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let voters: Vec<Id> = (1..=cfg.voters as u64).collect();
        let observers: Vec<Id> =
            (cfg.voters as u64 + 1..=(cfg.voters + cfg.observers) as u64).collect();
        let ids: Vec<Id> = voters.iter().chain(observers.iter()).copied().collect();
        let mut s = Sim {
            rng: Rng(cfg.seed ^ 0x5eed),
            cfg,
            ids: ids.clone(),
            voters,
            observers,
            peers: BTreeMap::new(),
            disks: BTreeMap::new(),
            delivered: BTreeMap::new(),
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            link_free_at: BTreeMap::new(),
            cut: BTreeSet::new(),
            global: Vec::new(),
            proposed: BTreeSet::new(),
            acked: Vec::new(),
            told_committed: BTreeMap::new(),
            leaders: BTreeMap::new(),
            writes: 0,
            leader_lost_at: Some(0),
            report: Report::default(),
            tick_ms: 50,
            queues: BTreeMap::new(),
            syncing: BTreeMap::new(),
            generation: BTreeMap::new(),
            snap: (0, 0, 0),
        };
        s.snap = (
            5 + s.rng.below(200) as usize,
            16 + s.rng.below(2000) as usize,
            1 + s.rng.below(30) as usize,
        );
        for id in ids {
            s.disks.insert(id, Disk::default());
            s.start(id);
        }
        s
    }

    fn peer_cfg(&self, id: Id) -> Config {
        Config {
            id,
            voters: self.voters.clone(),
            observers: self.observers.clone(),
            tick_ms: self.tick_ms,
            init_limit: 10,
            sync_limit: 5,
            finalize_wait_ms: 100,
            broken_ack_before_sync: self.cfg.broken_ack_before_sync,
            snap_count: self.snap.0,
            snap_bytes: self.snap.1,
            log_keep: self.snap.2,
        }
    }

    fn schedule(&mut self, at: u64, kind: EventKind, id: Id, msg: Option<(Id, Envelope)>) {
        self.seq += 1;
        self.events.insert((at, self.seq), (kind, id, msg));
    }

    fn start(&mut self, id: Id) {
        self.generation.entry(id).or_insert(0);
        let d = self.disks[&id].durable.clone();
        let n = self
            .prefix_at(d.applied)
            .unwrap_or_else(|| panic!("peer {id} applied 0x{:x}, never delivered", d.applied));
        self.delivered.insert(id, n);
        let mut p = Peer::new(self.peer_cfg(id), d, self.now);
        let outs = p.step(Input::Tick(self.now));
        self.peers.insert(id, p);
        // Peer::new queued its first votes; the tick above returns them all.
        self.apply_outputs(id, outs, false).ok();
        let t = self.now + self.tick_ms;
        self.schedule(t, EventKind::Tick, id, None);
    }

    fn crash(&mut self, id: Id) {
        let down = 50 + self.rng.below(2000);
        self.crash_for(id, down);
    }

    fn crash_for(&mut self, id: Id, down: u64) {
        if self.peers.remove(&id).is_some() {
            self.report.crashes += 1;
            self.disks.get_mut(&id).unwrap().pending.clear();
            self.queues.remove(&id);
            self.syncing.remove(&id);
            *self.generation.entry(id).or_insert(0) += 1;
            // Streams to and from it break.
            for other in self.ids.clone() {
                if other != id {
                    if let Some(p) = self.peers.get_mut(&other) {
                        let outs = p.step(Input::Disconnected(id));
                        let _ = self.apply_outputs(other, outs, false);
                    }
                }
            }
            let at = self.now + down;
            self.schedule(at, EventKind::Restart, id, None);
        }
    }

    fn send(&mut self, from: Id, to: Id, env: Envelope) {
        if self.cut.contains(&(from, to)) {
            return;
        }
        let election = env.msg.is_election();
        if self.rng.chance(self.cfg.faults.drop) {
            return;
        }
        let copies = if self.rng.chance(self.cfg.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.cfg.faults.max_delay_ms.max(1));
            let mut at = self.now + delay;
            if !election {
                // A stream is FIFO: nothing overtakes on one link.
                let free = self.link_free_at.entry((from, to)).or_insert(0);
                at = at.max(*free);
                *free = at;
            }
            self.schedule(at, EventKind::Msg, to, Some((from, env.clone())));
        }
    }

    /// Outputs run in order per peer. A sync takes simulated time (an fsync):
    /// what follows it waits, and a crash before it completes loses the
    /// unsynced writes, as a power failure would.
    fn apply_outputs(&mut self, id: Id, outs: Vec<Output>, may_crash: bool) -> Result<(), String> {
        self.queues.entry(id).or_default().extend(outs);
        self.drain(id, may_crash)
    }

    fn drain(&mut self, id: Id, may_crash: bool) -> Result<(), String> {
        // Behind a sync in progress, only what may pass it (as zkd's
        // driver does). A sync this drain starts ends the drain (below).
        let syncing = self.syncing.contains_key(&id);
        while let Some(o) = self
            .queues
            .get_mut(&id)
            .and_then(|q| q.pop_front_if(|o| !syncing || Output::may_pass_sync(o)))
        {
            if syncing && matches!(o, Output::DeliverCommitted(_)) {
                self.report.past_syncs += 1;
            }
            if may_crash && self.rng.chance(self.cfg.faults.crash_mid_step / 4.0) {
                self.crash(id);
                return Ok(());
            }
            match o {
                Output::Send(to, env) => self.send(id, to, env),
                Output::SendSnap(to, mut env) => {
                    let Msg::Sync(Sync::Snap { upto, state, .. }) = &mut env.msg else {
                        return Err(format!("peer {id}: SendSnap without a snapshot: {env:?}"));
                    };
                    let pos = self.delivered[&id];
                    if self.prefix_at(*upto) != Some(pos) {
                        return Err(format!(
                            "peer {id} snapshots at 0x{upto:x} but has delivered {pos} txns"
                        ));
                    }
                    *state = (pos as u64).to_le_bytes().to_vec();
                    self.report.snapshots += 1;
                    self.send(id, to, env)
                }
                Output::Persist(p) => {
                    if let Persist::Snapshot { upto, state, .. } = &p {
                        let pos = state
                            .as_slice()
                            .try_into()
                            .map(|b: [u8; 8]| u64::from_le_bytes(b) as usize)
                            .map_err(|_| format!("peer {id} installs a malformed state"))?;
                        if self.prefix_at(*upto) != Some(pos) {
                            return Err(format!(
                                "peer {id} installs a state of {pos} txns as 0x{upto:x}"
                            ));
                        }
                        self.delivered.insert(id, pos);
                    }
                    self.disks.get_mut(&id).unwrap().push(p)
                }
                Output::Sync => {
                    if !self.disks[&id].pending.is_empty() {
                        // As zkd's driver: the acks behind it leave when it
                        // ends, and a sync met among them, with nothing
                        // persisted since, is this one and is dropped.
                        let q = self.queues.get_mut(&id).expect("draining it");
                        let mut acks = Vec::new();
                        loop {
                            match q.front() {
                                Some(Output::Send(to, env))
                                    if matches!(env.msg, Msg::Ack { .. }) =>
                                {
                                    acks.push((*to, env.clone()))
                                }
                                Some(Output::Sync) => {}
                                _ => break,
                            }
                            q.pop_front();
                        }
                        self.syncing.insert(id, acks);
                        let at = self.now + 1 + self.rng.below(self.cfg.faults.fsync_ms_max.max(1));
                        let generation = self.generation[&id];
                        let upto = self.disks[&id].queued;
                        self.schedule(at, EventKind::SyncDone(generation, upto), id, None);
                        return Ok(());
                    }
                }
                Output::SyncThenAck(z) => {
                    // Its own fsync, which later outputs do not wait for.
                    let at = self.now + 1 + self.rng.below(self.cfg.faults.fsync_ms_max.max(1));
                    let upto = self.disks[&id].queued;
                    let generation = self.generation[&id];
                    self.schedule(at, EventKind::AckSynced(generation, upto, z), id, None);
                }
                Output::Deliver(t) | Output::DeliverCommitted(t) => self.check_deliver(id, t)?,
                Output::Established(e) => {
                    if let Some(prev) = self.leaders.insert(e, id) {
                        if prev != id {
                            return Err(format!("two leaders in epoch {e}: {prev} and {id}"));
                        }
                    }
                    self.report.epochs += 1;
                    if let Some(t) = self.leader_lost_at.take() {
                        self.report.failover_ms.push(self.now - t);
                    }
                }
                Output::Looking(_) => {
                    self.report.elections += 1;
                    if self.leaders.values().any(|l| *l == id) && self.leader_lost_at.is_none() {
                        self.leader_lost_at = Some(self.now);
                    }
                }
                Output::Diverged(why) => return Err(format!("peer {id} diverged: {why}")),
            }
        }
        Ok(())
    }

    /// The length of the delivered prefix that ends at `z`.
    fn prefix_at(&self, z: Zxid) -> Option<usize> {
        if z == 0 {
            return Some(0);
        }
        self.global
            .binary_search_by_key(&z, |t| t.zxid)
            .ok()
            .map(|i| i + 1)
    }

    fn check_deliver(&mut self, id: Id, t: Txn) -> Result<(), String> {
        let pos = self.delivered[&id];
        if !t.data.is_empty() && !self.proposed.contains(&*t.data) {
            return Err(format!("peer {id} delivered a txn nobody proposed: {t:?}"));
        }
        if pos < self.global.len() {
            if self.global[pos] != t {
                return Err(format!(
                    "prefix agreement broken: peer {id} delivered 0x{:x} at {pos}, others 0x{:x}",
                    t.zxid, self.global[pos].zxid
                ));
            }
        } else if pos == self.global.len() {
            if let Some(last) = self.global.last() {
                if t.zxid <= last.zxid {
                    return Err(format!(
                        "primary order broken: 0x{:x} after 0x{:x}",
                        t.zxid, last.zxid
                    ));
                }
            }
            self.global.push(t.clone());
        } else {
            return Err(format!(
                "peer {id} delivered position {pos} past the known {}",
                self.global.len()
            ));
        }
        self.delivered.insert(id, pos + 1);
        if self.peers.get(&id).is_some_and(|p| p.is_active_leader()) {
            self.acked.push(t.data.to_vec());
        } else if self.told_committed.get(&id).copied().unwrap_or(0) < t.zxid {
            self.report.early_deliveries += 1;
        }
        Ok(())
    }

    fn step_event(&mut self, faulty: bool) -> Result<bool, String> {
        let Some((&(at, s), _)) = self.events.iter().next() else {
            return Ok(false);
        };
        let (kind, id, msg) = self.events.remove(&(at, s)).unwrap();
        self.now = at;
        self.report.steps += 1;
        match kind {
            EventKind::Restart => {
                if !self.peers.contains_key(&id) {
                    self.start(id);
                }
            }
            EventKind::Tick => {
                if self.peers.contains_key(&id) {
                    let t = self.now + self.tick_ms;
                    self.schedule(t, EventKind::Tick, id, None);
                    let outs = self.peers.get_mut(&id).unwrap().step(Input::Tick(self.now));
                    self.apply_outputs(id, outs, faulty)?;
                }
            }
            EventKind::SyncDone(generation, upto) => {
                if self.generation.get(&id) == Some(&generation) && self.peers.contains_key(&id) {
                    self.disks.get_mut(&id).unwrap().sync_upto(upto);
                    for (to, env) in self.syncing.remove(&id).unwrap_or_default() {
                        self.send(id, to, env);
                    }
                    self.drain(id, faulty)?;
                }
            }
            EventKind::AckSynced(generation, upto, z) => {
                if self.generation.get(&id) == Some(&generation) && self.peers.contains_key(&id) {
                    self.disks.get_mut(&id).unwrap().sync_upto(upto);
                    let outs = self.peers.get_mut(&id).unwrap().step(Input::Synced(z));
                    self.apply_outputs(id, outs, faulty)?;
                }
            }
            EventKind::Msg => {
                let (from, env) = msg.unwrap();
                if self.cut.contains(&(from, id)) {
                    return Ok(true);
                }
                if let Some(p) = self.peers.get_mut(&id) {
                    let told = match &env.msg {
                        Msg::Commit { zxid } | Msg::UpToDate { committed: zxid } => Some(*zxid),
                        Msg::Inform(t) => Some(t.zxid),
                        _ => None,
                    };
                    if let Some(z) = told {
                        let c = self.told_committed.entry(id).or_default();
                        *c = (*c).max(z);
                    }
                    let outs = p.step(Input::Msg(from, env));
                    self.apply_outputs(id, outs, faulty)?;
                }
            }
        }
        if faulty {
            self.inject_faults();
        }
        self.offer_write()?;
        Ok(true)
    }

    /// A client write to a random active leader, now and then, while it has
    /// fewer than `WRITES_IN_FLIGHT` undelivered.
    fn offer_write(&mut self) -> Result<(), String> {
        if !self.rng.chance(self.cfg.faults.write) {
            return Ok(());
        }
        let leaders: Vec<Id> = self
            .ids
            .iter()
            .copied()
            .filter(|i| {
                self.peers.get(i).is_some_and(|p| {
                    p.is_active_leader() && p.last_zxid() - p.delivered_zxid() < WRITES_IN_FLIGHT
                })
            })
            .collect();
        if leaders.is_empty() {
            return Ok(());
        }
        let l = leaders[self.rng.below(leaders.len() as u64) as usize];
        self.writes += 1;
        let data = format!("w{}", self.writes).into_bytes();
        self.proposed.insert(data.clone());
        // Most writes come from a learner's client, forwarded: the learner
        // may then commit on the leader's word that its log holds the txn.
        let others: Vec<Id> = self.ids.iter().copied().filter(|i| *i != l).collect();
        let input = if self.rng.chance(0.7) && !others.is_empty() {
            let from = others[self.rng.below(others.len() as u64) as usize];
            Input::Forwarded(from, data)
        } else {
            Input::Write(data)
        };
        let outs = self.peers.get_mut(&l).unwrap().step(input);
        self.apply_outputs(l, outs, true)
    }

    fn inject_faults(&mut self) {
        let f = self.cfg.faults.clone();
        if self.rng.chance(f.crash) {
            let live: Vec<Id> = self
                .ids
                .iter()
                .copied()
                .filter(|i| self.peers.contains_key(i))
                .collect();
            if !live.is_empty() {
                let id = live[self.rng.below(live.len() as u64) as usize];
                self.crash(id);
            }
        }
        if self.rng.chance(f.power_failure) {
            self.report.power_failures += 1;
            // Half the time adversarially: the peers with the longest durable
            // logs come back last, so the others must not elect without them
            // having lost something acknowledged.
            let mut order = self.ids.clone();
            let adversarial = self.rng.chance(0.5);
            if adversarial {
                order.sort_by_key(|i| {
                    let d = &self.disks[i].durable;
                    d.log.last().map(|t| t.zxid).unwrap_or(d.base)
                });
            }
            for (rank, id) in order.into_iter().enumerate() {
                let down = if adversarial {
                    50 + 1500 * rank as u64
                } else {
                    50 + self.rng.below(2000)
                };
                self.crash_for(id, down);
            }
        }
        if self.rng.chance(f.partition) {
            if self.cut.is_empty() {
                // Isolate a random minority (often the leader).
                self.report.partitions += 1;
                let n = 1 + self.rng.below((self.ids.len() as u64 - 1) / 2);
                let mut side: Vec<Id> = Vec::new();
                if let Some(l) = self
                    .ids
                    .iter()
                    .copied()
                    .find(|i| self.peers.get(i).is_some_and(|p| p.is_active_leader()))
                {
                    if self.rng.chance(0.5) {
                        side.push(l);
                    }
                }
                while (side.len() as u64) < n {
                    let c = self.ids[self.rng.below(self.ids.len() as u64) as usize];
                    if !side.contains(&c) {
                        side.push(c);
                    }
                }
                for &a in &side {
                    for &b in &self.ids {
                        if !side.contains(&b) {
                            self.cut.insert((a, b));
                            self.cut.insert((b, a));
                        }
                    }
                }
            } else {
                self.cut.clear();
            }
        }
    }

    pub fn run(&mut self) -> Result<(), String> {
        let seed = self.cfg.seed;
        let ctx = |e: String| format!("seed {seed}: {e}");
        while self.now < self.cfg.duration_ms {
            if !self.step_event(true).map_err(ctx)? {
                break;
            }
        }
        // Heal: no new faults, everyone up, the network whole.
        self.cut.clear();
        self.cfg.faults.drop = 0.0;
        self.cfg.faults.duplicate = 0.0;
        self.cfg.faults.crash_mid_step = 0.0;
        for id in self.ids.clone() {
            if !self.peers.contains_key(&id) {
                self.start(id);
            }
        }
        // Some writes on the healed ensemble, then none, so that everyone can
        // be seen to catch up.
        self.cfg.faults.write = 0.05;
        let writes_until = self.now + 10_000;
        let heal_until = self.now + 40_000;
        while self.now < heal_until {
            if self.now >= writes_until {
                self.cfg.faults.write = 0.0;
            }
            if !self.step_event(false).map_err(ctx)? {
                break;
            }
            let all = self
                .ids
                .iter()
                .all(|i| self.delivered.get(i) == Some(&self.global.len()));
            let leader = self
                .ids
                .iter()
                .any(|i| self.peers.get(i).is_some_and(|p| p.is_active_leader()));
            if self.now >= writes_until && all && leader {
                break;
            }
        }
        let behind: Vec<String> = self
            .ids
            .iter()
            .filter(|i| self.delivered.get(i) != Some(&self.global.len()))
            .map(|i| {
                format!(
                    "{i}:{}/{}",
                    self.delivered.get(i).copied().unwrap_or(0),
                    self.global.len()
                )
            })
            .collect();
        if !behind.is_empty() {
            let detail: Vec<String> = self
                .ids
                .iter()
                .filter_map(|i| self.peers.get(i))
                .map(|p| {
                    format!(
                        "{}:{:?} leader={:?} epoch={} last=0x{:x} delivered=0x{:x}",
                        p.id(),
                        p.state(),
                        p.leader(),
                        p.current_epoch(),
                        p.last_zxid(),
                        p.delivered_zxid()
                    )
                })
                .collect();
            let tail: Vec<String> = self
                .global
                .iter()
                .rev()
                .take(6)
                .map(|t| format!("0x{:x}", t.zxid))
                .collect();
            return Err(ctx(format!(
                "after healing, peers still behind: {}; peers: {}; committed tail: {}",
                behind.join(" "),
                detail.join(", "),
                tail.join(" ")
            )));
        }
        if !self
            .ids
            .iter()
            .any(|i| self.peers.get(i).is_some_and(|p| p.is_active_leader()))
        {
            return Err(ctx("after healing, no leader".into()));
        }
        let have: BTreeSet<&Vec<u8>> = self.global.iter().map(|t| &*t.data).collect();
        if let Some(lost) = self.acked.iter().find(|a| !have.contains(a)) {
            return Err(ctx(format!(
                "acknowledged write {:?} lost",
                String::from_utf8_lossy(lost)
            )));
        }
        self.report.committed = self.global.len();
        self.report.acked_writes = self.acked.len();
        Ok(())
    }
}
