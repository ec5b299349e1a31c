//! One ZAB peer as a pure state machine: `step` takes an input (a message, a
//! tick with the time, a client write, a lost stream) and appends outputs
//! (messages, persistence, sync barriers, deliveries). Nothing here touches a
//! socket, a disk or a clock, so whole ensembles run deterministically in
//! `sim`.
//!
//! Outputs are executed in order. `Output::Sync` is a barrier: everything
//! persisted before it must be durable before any later output happens,
//! but for a txn the leader's COMMIT covers (`Output::DeliverCommitted`,
//! `Output::may_pass_sync`), which a quorum holds durably already. The
//! durability rules of zab.md are orderings of these outputs:
//! - acceptedEpoch durable before ACKEPOCH (ZOOKEEPER-1653, 2307);
//! - the synced txns durable before currentEpoch is written, and both before
//!   ACK(NEWLEADER) (ZOOKEEPER-3911, 2678, 4394);
//! - each proposal durable before its ACK, and the leader counts itself only
//!   after its own sync (`Output::SyncThenAck`, answered by `Input::Synced`:
//!   not a barrier, so the followers' acks alone can make a quorum while the
//!   leader's own fsync is still running, as in ZooKeeper);
//! - a log is never cut below what was delivered (ZOOKEEPER-1154): a SNAP that
//!   would is refused as divergence.
//!
//! Commit: a txn is committed once the logs of a quorum hold it durably. The
//! leader learns that from acks and says so with COMMIT. Beyond ZooKeeper, a
//! follower that forwarded a write learns it itself when its own durable
//! copy and the leader's make a quorum (3 voters): the leader tells it when
//! its own sync is done (`Msg::Logged`), and it delivers behind a barrier
//! on its own log. That spares the follower's client one round trip
//! between members (see `tell_forwarders`), and the COMMIT that would
//! follow is not sent to it (`try_commit`).
//!
//! Compaction: the application's applied state is the snapshot. Once more
//! than `snap_count` delivered txns (or `snap_bytes` of them) are held, all
//! but the last `log_keep` are dropped (`Persist::Compact`) and `base` moves
//! up to the last dropped zxid. A learner whose log does not continue from
//! `base` or a txn still held gets a SNAP: the leader's applied state
//! (filled in by the runtime, `Output::SendSnap`) plus its undelivered txns.
//!
//! Streams: everything but votes travels on one stream per learner connection,
//! stamped with the connection number and a sequence number, so a lost,
//! duplicated or reordered message is seen as a broken stream (as TCP would
//! break), never silently applied out of order.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::*;

#[derive(Debug, Clone)]
pub struct Config {
    pub id: Id,
    pub voters: Vec<Id>,
    pub observers: Vec<Id>,
    pub tick_ms: u64,
    /// Ticks a learner may take to connect and sync.
    pub init_limit: u64,
    /// Ticks a synced learner or leader may go without hearing from the other side.
    pub sync_limit: u64,
    /// How long a quorum's agreement must stand before an election decides.
    pub finalize_wait_ms: u64,
    /// A deliberate bug (a follower ACKs a proposal, and the leader counts
    /// its own ack, before the proposal is durable), so the simulation can
    /// prove it notices lost acknowledged writes. Always false in zkd.
    pub broken_ack_before_sync: bool,
    /// Compact the log once this many delivered txns are held...
    pub snap_count: usize,
    /// ...or this many bytes of them.
    pub snap_bytes: usize,
    /// Delivered txns kept after compacting (at least 1), so a learner
    /// that is a little behind still gets a DIFF.
    pub log_keep: usize,
}

impl Config {
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Do these peers include a quorum of voters?
    fn is_quorum<'a>(&self, ids: impl Iterator<Item = &'a Id>) -> bool {
        ids.filter(|p| self.voters.contains(p)).count() >= self.quorum()
    }

    fn is_voter(&self, id: Id) -> bool {
        self.voters.contains(&id)
    }

    fn peers(&self) -> impl Iterator<Item = Id> + '_ {
        self.voters
            .iter()
            .chain(self.observers.iter())
            .copied()
            .filter(move |p| *p != self.id)
    }
}

/// What survives a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durable {
    pub accepted_epoch: u64,
    pub current_epoch: u64,
    /// The txns after `base`.
    pub log: Vec<Txn>,
    /// How far the application has applied (and made durable) the log.
    pub applied: Zxid,
    /// The zxid the log was compacted to: everything up to it lives only in
    /// the application's state (`applied >= base`).
    pub base: Zxid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    AcceptedEpoch(u64),
    CurrentEpoch(u64),
    Append(Vec<Txn>),
    Applied(Zxid),
    /// Log entries up to this zxid may go: the applied state holds them.
    Compact(Zxid),
    /// Replace the application's state with `state` (at `upto`, which is
    /// then both applied and the log's base) and the log with `log`. The
    /// runtime also installs the state in memory when it carries this out.
    /// Shared, not copied: a runtime may read it on two threads at once
    /// (zkd decodes it into its tree while its storage thread turns it
    /// into the disk write).
    Snapshot {
        upto: Zxid,
        state: std::sync::Arc<Vec<u8>>,
        log: Vec<Txn>,
    },
}

/// A quorum message with its stream stamp (votes use conn 0, seq 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub conn: u64,
    pub seq: u64,
    pub msg: Msg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(Id, Envelope),
    /// Send a `Sync::Snap` after putting the application's applied state
    /// into it: everything delivered before this output, which is exactly
    /// the state at the message's `upto`.
    SendSnap(Id, Envelope),
    Persist(Persist),
    Sync,
    /// Make everything persisted so far durable, then step
    /// `Input::Synced(zxid)`. Unlike `Sync`, later outputs do not wait for
    /// it: the leader's own ack of its proposals up to `zxid`.
    SyncThenAck(Zxid),
    /// A committed txn, to apply, in zxid order.
    Deliver(Txn),
    /// A txn the leader said is committed (COMMIT): a quorum's logs hold it
    /// durably whether or not this peer's copy is synced yet, so, unlike
    /// every other output, it need not wait for a `Sync` in progress; it
    /// stays in order with the other deliveries (`may_pass_sync`). As a
    /// ZooKeeper follower applies a COMMIT without waiting for its own
    /// log's flush.
    DeliverCommitted(Txn),
    /// This peer now leads an established epoch (a quorum acked NEWLEADER).
    Established(u64),
    /// The peer left its role (or started) and is electing; why.
    Looking(&'static str),
    /// Its own log contradicts what it already delivered: stop serving.
    Diverged(String),
}

impl Output {
    /// Whether the runtime may carry this output out while a `Sync` before
    /// it is still in progress, provided every output between the two may
    /// too: a txn committed elsewhere, and the applied mark that follows
    /// its delivery (written after what the sync writes, in order).
    pub fn may_pass_sync(&self) -> bool {
        matches!(
            self,
            Output::DeliverCommitted(_) | Output::Persist(Persist::Applied(_))
        )
    }
}

#[derive(Debug, Clone)]
pub enum Input {
    Msg(Id, Envelope),
    Tick(u64),
    /// A client write, at the leader.
    Write(Vec<u8>),
    /// A client write that this learner forwarded to the leader: as
    /// `Write`, and the learner hears when the leader's own log holds it
    /// (`Msg::Logged`).
    Forwarded(Id, Vec<u8>),
    /// The runtime lost its stream with this peer.
    Disconnected(Id),
    /// What was persisted before `Output::SyncThenAck(zxid)` is durable.
    Synced(Zxid),
}

#[derive(Debug)]
struct Election {
    round: u64,
    vote: Vote,
    votes: BTreeMap<Id, Vote>,
    outside: BTreeMap<Id, Vote>,
    decide_at: Option<u64>,
    /// When our vote last went to every peer.
    broadcast_at: u64,
}

#[derive(Debug, Default)]
struct Stream {
    conn: u64,
    send_seq: u64,
    recv_seq: u64,
}

impl Stream {
    /// The next message on this stream, stamped with its place in it.
    fn stamp(&mut self, msg: Msg) -> Envelope {
        self.send_seq += 1;
        Envelope {
            conn: self.conn,
            seq: self.send_seq,
            msg,
        }
    }
}

#[derive(Debug)]
struct Link {
    stream: Stream,
    observer: bool,
    /// Sync and NEWLEADER sent: proposals and commits flow to it.
    sync_sent: bool,
    /// Leader's last zxid at the time of its sync (its NEWLEADER ack covers these).
    sync_point: Zxid,
    acked_newleader: bool,
    last_heard: u64,
    /// The highest zxid it was told after its UPTODATE that the leader's
    /// log holds (`Msg::Logged`): it commits up to there on its own.
    logged: Zxid,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum LeaderPhase {
    Discovery,
    Sync,
    Active,
}

/// The leader tells forwarding learners that its log holds their txns
/// (`Msg::Logged`) only while at most this many txns wait for acks. Under
/// load, COMMITs of earlier txns reach every follower all the time, and
/// each of these messages costs its follower a wake-up and a barrier.
/// Without the bound (and with a driver change since dropped), set 16x32
/// 100 B on a loopback ensemble lost 1-11% (3 alternations); with it, the
/// 16x32 rows moved within noise.
const LOGGED_WHILE_WAITING: usize = 4;

/// A proposal waiting for a quorum.
#[derive(Debug)]
struct Waiting {
    /// Who has it durably.
    acked: BTreeSet<Id>,
    /// The learner that forwarded it (whose client waits for it): told
    /// when the leader's own log holds it.
    forwarded_by: Option<Id>,
}

#[derive(Debug)]
struct Leading {
    phase: LeaderPhase,
    epoch: u64,
    infos: BTreeMap<Id, (u64, Zxid)>,
    epoch_acks: BTreeSet<Id>,
    /// Learners that acked the epoch before a quorum had, with their last
    /// zxid: synced once a quorum has (see `Msg::AckEpoch`).
    unsynced: BTreeMap<Id, Zxid>,
    newleader_acks: BTreeSet<Id>,
    links: BTreeMap<Id, Link>,
    /// Proposals not yet committed.
    acks: BTreeMap<Zxid, Waiting>,
    counter: u64,
    started: u64,
    /// When learners were last pinged (every half tick, as ZooKeeper does).
    pinged_at: u64,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum LearnerPhase {
    Connecting,
    Syncing,
    Synced,
}

#[derive(Debug)]
struct Learning {
    leader: Id,
    observer: bool,
    phase: LearnerPhase,
    stream: Stream,
    last_heard: u64,
    commit_target: Zxid,
    /// When FOLLOWERINFO was last sent (it is repeated until answered).
    info_sent_at: u64,
}

#[derive(Debug)]
enum Role {
    Looking(Election),
    Leading(Leading),
    Learning(Learning),
}

pub struct Peer {
    pub cfg: Config,
    now: u64,
    accepted_epoch: u64,
    current_epoch: u64,
    /// The txns after `base`.
    log: Vec<Txn>,
    base: Zxid,
    /// Number of log entries delivered to the application.
    delivered: usize,
    /// Bytes of data in the delivered entries.
    delivered_bytes: usize,
    round: u64,
    next_conn: u64,
    role: Role,
    out: Vec<Output>,
    diverged: bool,
    /// FOLLOWERINFOs that arrived while still looking: a learner may decide
    /// before its leader does. Taken up if this peer then leads.
    early_infos: BTreeMap<Id, Envelope>,
}

impl Peer {
    /// A peer starting (or restarting) from what its disk kept.
    pub fn new(cfg: Config, d: Durable, now: u64) -> Peer {
        let mut log = d.log;
        log.retain(|t| t.zxid > d.base);
        let delivered = log.iter().take_while(|t| t.zxid <= d.applied).count();
        let delivered_bytes = log[..delivered].iter().map(|t| t.data.len()).sum();
        let mut p = Peer {
            cfg,
            now,
            accepted_epoch: d.accepted_epoch,
            current_epoch: d.current_epoch,
            log,
            base: d.base,
            delivered,
            delivered_bytes,
            round: 0,
            next_conn: now << 16,
            role: Role::Looking(Election {
                round: 0,
                vote: Vote {
                    leader: 0,
                    zxid: 0,
                    peer_epoch: 0,
                    round: 0,
                    state: PeerState::Looking,
                },
                votes: BTreeMap::new(),
                outside: BTreeMap::new(),
                decide_at: None,
                broadcast_at: now,
            }),
            out: Vec::new(),
            diverged: false,
            early_infos: BTreeMap::new(),
        };
        p.look("starting");
        p
    }

    pub fn id(&self) -> Id {
        self.cfg.id
    }

    pub fn last_zxid(&self) -> Zxid {
        self.log.last().map(|t| t.zxid).unwrap_or(self.base)
    }

    /// The zxid the log was compacted to.
    pub fn log_base(&self) -> Zxid {
        self.base
    }

    pub fn delivered_zxid(&self) -> Zxid {
        if self.delivered == 0 {
            self.base
        } else {
            self.log[self.delivered - 1].zxid
        }
    }

    pub fn state(&self) -> PeerState {
        match &self.role {
            Role::Looking(_) => PeerState::Looking,
            Role::Leading(_) => PeerState::Leading,
            Role::Learning(l) if l.observer => PeerState::Observing,
            Role::Learning(_) => PeerState::Following,
        }
    }

    /// The leader this peer follows or is, once past election.
    pub fn leader(&self) -> Option<Id> {
        match &self.role {
            Role::Looking(_) => None,
            Role::Leading(_) => Some(self.cfg.id),
            Role::Learning(l) => Some(l.leader),
        }
    }

    /// Leading an established epoch and taking writes.
    pub fn is_active_leader(&self) -> bool {
        matches!(&self.role, Role::Leading(l) if l.phase == LeaderPhase::Active)
    }

    pub fn current_epoch(&self) -> u64 {
        self.current_epoch
    }

    pub fn accepted_epoch(&self) -> u64 {
        self.accepted_epoch
    }

    /// The zxid the next `Input::Write` will get, while leading an
    /// established epoch (the application prepares the txn with it).
    pub fn next_zxid(&self) -> Option<Zxid> {
        match &self.role {
            Role::Leading(l) if l.phase == LeaderPhase::Active && l.counter < 0xffff_fffe => {
                Some(zxid(l.epoch, l.counter + 1))
            }
            _ => None,
        }
    }

    /// May clients be served: leading an established epoch, or synced with
    /// the leader.
    pub fn serving(&self) -> bool {
        match &self.role {
            Role::Looking(_) => false,
            Role::Leading(l) => l.phase == LeaderPhase::Active,
            Role::Learning(f) => f.phase == LearnerPhase::Synced,
        }
    }

    /// The leader's learners as (id, observer, synced), for status reports.
    pub fn learners(&self) -> Vec<(Id, bool, bool)> {
        match &self.role {
            Role::Leading(l) => l
                .links
                .iter()
                .map(|(p, k)| (*p, k.observer, k.acked_newleader))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The txns held (after `base`), for the runtime's log-size reports.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    pub fn step(&mut self, input: Input) -> Vec<Output> {
        if self.diverged {
            return Vec::new();
        }
        match input {
            Input::Tick(now) => {
                self.now = now;
                self.tick();
            }
            Input::Msg(from, env) => self.on_msg(from, env),
            Input::Write(data) => self.write(data, None),
            Input::Forwarded(from, data) => self.write(data, Some(from)),
            Input::Disconnected(p) => self.disconnected(p),
            Input::Synced(z) => self.synced(z),
        }
        std::mem::take(&mut self.out)
    }

    // ---------------------------------------------------------------- election

    fn my_vote(&self) -> Vote {
        if self.cfg.is_voter(self.cfg.id) {
            Vote {
                leader: self.cfg.id,
                zxid: self.last_zxid(),
                peer_epoch: self.current_epoch,
                round: self.round,
                state: PeerState::Looking,
            }
        } else {
            // An observer proposes nobody: any voter's proposal beats this.
            Vote {
                leader: 0,
                zxid: 0,
                peer_epoch: 0,
                round: self.round,
                state: PeerState::Looking,
            }
        }
    }

    fn look(&mut self, why: &'static str) {
        self.early_infos.clear();
        self.round += 1;
        let vote = self.my_vote();
        self.role = Role::Looking(Election {
            round: self.round,
            vote,
            votes: BTreeMap::new(),
            outside: BTreeMap::new(),
            decide_at: None,
            broadcast_at: self.now,
        });
        self.out.push(Output::Looking(why));
        self.broadcast_vote();
        self.check_quorum_vote();
    }

    fn broadcast_vote(&mut self) {
        let now = self.now;
        let Role::Looking(e) = &mut self.role else {
            return;
        };
        e.broadcast_at = now;
        let v = Vote {
            round: e.round,
            state: PeerState::Looking,
            ..e.vote
        };
        let peers: Vec<Id> = self.cfg.peers().collect();
        for p in peers {
            self.send_vote(p, v);
        }
    }

    fn send_vote(&mut self, to: Id, v: Vote) {
        self.out.push(Output::Send(
            to,
            Envelope {
                conn: 0,
                seq: 0,
                msg: Msg::Vote(v),
            },
        ));
    }

    /// The vote this peer shows others once it is past the election.
    fn standing_vote(&self) -> Vote {
        let state = self.state();
        let (leader, peer_epoch) = match &self.role {
            Role::Leading(l) => (self.cfg.id, l.epoch.max(self.current_epoch)),
            Role::Learning(l) => (l.leader, self.current_epoch),
            Role::Looking(e) => (e.vote.leader, e.vote.peer_epoch),
        };
        Vote {
            leader,
            zxid: self.last_zxid(),
            peer_epoch,
            round: self.round,
            state,
        }
    }

    fn on_vote(&mut self, from: Id, v: Vote) {
        let me = self.cfg.id;
        let last_zxid = self.last_zxid();
        let Role::Looking(e) = &mut self.role else {
            // Past the election: tell a looking peer whom we follow.
            if v.state == PeerState::Looking {
                let sv = self.standing_vote();
                self.send_vote(from, sv);
            }
            return;
        };
        if v.state != PeerState::Looking {
            e.outside.insert(from, v);
            if v.round == e.round && self.cfg.is_voter(from) {
                e.votes.insert(from, v);
            }
            // Join a leader a quorum already follows, if it says it leads.
            let l = v.leader;
            let n = e
                .outside
                .iter()
                .filter(|(p, x)| {
                    self.cfg.is_voter(**p) && x.leader == l && x.state != PeerState::Observing
                })
                .count();
            let leads = e
                .outside
                .get(&l)
                .is_some_and(|x| x.state == PeerState::Leading);
            if n >= self.cfg.quorum() && leads && l != me {
                self.round = self.round.max(v.round);
                self.follow(l);
            }
            return;
        }
        if !self.cfg.is_voter(from) {
            // An observer looking for the leader: answer, never count it.
            let mine = Vote {
                round: e.round,
                state: PeerState::Looking,
                ..e.vote
            };
            self.send_vote(from, mine);
            return;
        }
        let better = |a: &Vote, b: &Vote| a.key() > b.key();
        if v.round > e.round {
            e.round = v.round;
            self.round = v.round;
            e.votes.clear();
            e.decide_at = None;
            let mine = Vote {
                round: v.round,
                ..self_vote(&self.cfg, last_zxid, self.current_epoch, v.round)
            };
            e.vote = if self.cfg.is_voter(v.leader) && better(&v, &mine) {
                Vote {
                    round: v.round,
                    ..v
                }
            } else {
                mine
            };
            self.broadcast_vote();
        } else if v.round < e.round {
            let mine = Vote {
                round: e.round,
                state: PeerState::Looking,
                ..e.vote
            };
            self.send_vote(from, mine);
            return;
        } else if self.cfg.is_voter(v.leader) && better(&v, &e.vote) {
            e.vote = Vote {
                round: e.round,
                ..v
            };
            e.decide_at = None;
            self.broadcast_vote();
        } else if better(&e.vote, &v) {
            // The sender backs a worse candidate, perhaps because our vote
            // reached it before it was looking: tell it ours again.
            let mine = Vote {
                round: e.round,
                state: PeerState::Looking,
                ..e.vote
            };
            self.send_vote(from, mine);
        }
        if let Role::Looking(e) = &mut self.role {
            e.votes.insert(from, v);
        }
        self.check_quorum_vote();
    }

    /// When a quorum of voters (counting ourselves if we vote) agrees with our
    /// vote, arm the settle timer; it decides unless the vote changes first.
    fn check_quorum_vote(&mut self) {
        let me = self.cfg.id;
        let q = self.cfg.quorum();
        let voter = self.cfg.is_voter(me);
        let now = self.now;
        let wait = self.cfg.finalize_wait_ms;
        let Role::Looking(e) = &mut self.role else {
            return;
        };
        if e.vote.leader == 0 {
            return;
        }
        let target = e.vote.key();
        let mut n = e
            .votes
            .iter()
            .filter(|(p, x)| **p != me && x.key() == target && x.round == e.round)
            .count();
        if voter {
            n += 1;
        }
        if n >= q {
            e.decide_at.get_or_insert(now + wait);
        } else {
            e.decide_at = None;
        }
    }

    fn decide(&mut self) {
        let Role::Looking(e) = &self.role else { return };
        let l = e.vote.leader;
        if l == self.cfg.id {
            self.lead();
        } else {
            self.follow(l);
        }
    }

    // ---------------------------------------------------------------- leader

    fn lead(&mut self) {
        let early = std::mem::take(&mut self.early_infos);
        self.lead_fresh();
        for (from, env) in early {
            self.on_learner_msg(from, env);
        }
    }

    fn lead_fresh(&mut self) {
        let mut infos = BTreeMap::new();
        infos.insert(self.cfg.id, (self.accepted_epoch, self.last_zxid()));
        self.role = Role::Leading(Leading {
            phase: LeaderPhase::Discovery,
            epoch: 0,
            infos,
            epoch_acks: BTreeSet::new(),
            unsynced: BTreeMap::new(),
            newleader_acks: BTreeSet::new(),
            links: BTreeMap::new(),
            acks: BTreeMap::new(),
            counter: 0,
            started: self.now,
            pinged_at: self.now,
        });
        self.maybe_choose_epoch();
    }

    fn lsend(&mut self, to: Id, msg: Msg) {
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if let Some(link) = l.links.get_mut(&to) {
            // What the learner will know once it has read this far in its
            // stream (see `try_commit`). An established leader sends
            // UPTODATE with the NEWLEADER ack (or on establishing, to every
            // learner that acked), so a link that acked was sent it.
            if let Msg::Logged { zxid } = msg {
                if l.phase == LeaderPhase::Active && link.acked_newleader {
                    link.logged = link.logged.max(zxid);
                }
            }
            let env = link.stream.stamp(msg);
            self.out.push(Output::Send(to, env));
        }
    }

    fn maybe_choose_epoch(&mut self) {
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.epoch != 0 || !self.cfg.is_quorum(l.infos.keys()) {
            return;
        }
        let epoch = l.infos.values().map(|(a, _)| *a).max().unwrap_or(0) + 1;
        l.epoch = epoch;
        l.phase = LeaderPhase::Sync;
        self.accepted_epoch = epoch;
        self.out
            .push(Output::Persist(Persist::AcceptedEpoch(epoch)));
        self.out.push(Output::Sync);
        let waiting: Vec<Id> = l
            .infos
            .keys()
            .copied()
            .filter(|p| *p != self.cfg.id)
            .collect();
        for p in waiting {
            self.lsend(p, Msg::LeaderInfo { epoch });
        }
        // The leader's own epoch ack.
        self.on_ack_epoch_self();
    }

    fn on_ack_epoch_self(&mut self) {
        let me = self.cfg.id;
        if let Role::Leading(l) = &mut self.role {
            l.epoch_acks.insert(me);
        }
        self.maybe_newleader_self();
    }

    /// Once a quorum acked the epoch, the leader's own history (already
    /// durable) becomes the new epoch's: write currentEpoch and count itself.
    fn maybe_newleader_self(&mut self) {
        let me = self.cfg.id;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if !self.cfg.is_quorum(l.epoch_acks.iter()) || l.newleader_acks.contains(&me) {
            return;
        }
        let epoch = l.epoch;
        l.newleader_acks.insert(me);
        self.current_epoch = epoch;
        self.out.push(Output::Persist(Persist::CurrentEpoch(epoch)));
        self.out.push(Output::Sync);
        self.maybe_establish();
    }

    fn on_learner_msg(&mut self, from: Id, env: Envelope) {
        let now = self.now;
        let my_last = (self.current_epoch, self.last_zxid());
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if let Msg::FollowerInfo {
            accepted_epoch,
            last_zxid,
            observer,
        } = env.msg
        {
            if l.epoch != 0 && accepted_epoch > l.epoch && !observer {
                // It promised a later epoch (one that never got going) and
                // will refuse ours forever: start over, so the next epoch
                // is above every promise.
                self.look("a learner promised a later epoch");
                return;
            }
            // A new stream from this learner replaces any old one.
            let mut link = Link {
                stream: Stream {
                    conn: env.conn,
                    send_seq: 0,
                    recv_seq: env.seq,
                },
                observer,
                sync_sent: false,
                sync_point: 0,
                acked_newleader: false,
                last_heard: now,
                logged: 0,
            };
            link.stream.recv_seq = env.seq;
            l.links.insert(from, link);
            l.newleader_acks.remove(&from);
            l.epoch_acks.remove(&from);
            l.unsynced.remove(&from);
            if !observer {
                l.infos.insert(from, (accepted_epoch, last_zxid));
            }
            if l.epoch != 0 {
                let epoch = l.epoch;
                self.lsend(from, Msg::LeaderInfo { epoch });
            } else if !observer {
                self.maybe_choose_epoch();
            } else {
                // Observers wait until there is an epoch to tell them.
            }
            return;
        }
        let Some(link) = l.links.get_mut(&from) else {
            return;
        };
        if env.conn != link.stream.conn {
            return; // a message of an older stream
        }
        if env.seq != link.stream.recv_seq + 1 {
            if env.seq <= link.stream.recv_seq {
                return; // duplicate
            }
            // A gap: the stream is broken; the learner must reconnect.
            l.links.remove(&from);
            return;
        }
        link.stream.recv_seq = env.seq;
        link.last_heard = now;
        match env.msg {
            Msg::AckEpoch {
                current_epoch,
                last_zxid,
            } => {
                if (current_epoch, last_zxid) > my_last {
                    // A learner knows more than we do: we must not lead.
                    self.look("a learner is ahead of us");
                    return;
                }
                // No learner is synced (and so sent NEWLEADER, after which
                // it records the epoch as its current one) before a quorum
                // has durably accepted the epoch, as ZooKeeper's leader
                // waits (`waitForEpochAck`) before any learner's sync.
                // Otherwise a learner can hold a current epoch that no
                // quorum accepted; another quorum then establishes a lower
                // epoch and commits in it, and after a restart that learner's
                // higher epoch wins the election with none of those txns
                // (`scripts/zab-soak.sh 1 90217`: 5 voters, a learner of the
                // epoch-2 attempt synced with an empty log, epoch 1
                // committed 4 txns, then it led and sent a SNAP at 0x0).
                l.epoch_acks.insert(from);
                l.unsynced.insert(from, last_zxid);
                if self.cfg.is_quorum(l.epoch_acks.iter()) {
                    for (p, last) in std::mem::take(&mut l.unsynced) {
                        self.sync_learner(p, last);
                    }
                }
                self.maybe_newleader_self();
            }
            Msg::AckNewLeader { epoch } => {
                if epoch != l.epoch {
                    return;
                }
                link.acked_newleader = true;
                let point = link.sync_point;
                let observer = link.observer;
                if !observer {
                    l.newleader_acks.insert(from);
                    // Its NEWLEADER ack says everything in its sync is durable.
                    for (_, w) in l.acks.range_mut(..=point) {
                        w.acked.insert(from);
                    }
                }
                if l.phase == LeaderPhase::Active {
                    let committed = self.delivered_zxid();
                    self.lsend(from, Msg::UpToDate { committed });
                    self.try_commit();
                } else {
                    self.maybe_establish();
                }
            }
            Msg::Ack { zxid } => {
                if link.observer || !link.acked_newleader {
                    return;
                }
                // Acks are cumulative: a learner logs without gaps.
                for (_, w) in l.acks.range_mut(..=zxid) {
                    w.acked.insert(from);
                }
                self.try_commit();
            }
            Msg::PingAck => {}
            _ => {}
        }
    }

    fn sync_learner(&mut self, to: Id, learner_last: Zxid) {
        let (last, applied) = (self.last_zxid(), self.delivered_zxid());
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let epoch = l.epoch;
        // Same zxid, same history up to it (one leader per epoch): a log
        // ending at our base or at a txn we hold continues with a DIFF.
        let from = if learner_last == self.base {
            Some(0)
        } else {
            self.log
                .iter()
                .position(|t| t.zxid == learner_last)
                .map(|i| i + 1)
        };
        let Some(link) = l.links.get_mut(&to) else {
            return;
        };
        link.sync_sent = true;
        link.sync_point = last;
        match from {
            Some(i) => self.lsend(to, Msg::Sync(Sync::Diff(self.log[i..].to_vec()))),
            None => {
                let msg = Msg::Sync(Sync::Snap {
                    upto: applied,
                    state: Vec::new(),
                    log: self.log[self.delivered..].to_vec(),
                });
                let env = link.stream.stamp(msg);
                self.out.push(Output::SendSnap(to, env));
            }
        }
        self.lsend(to, Msg::NewLeader { epoch });
    }

    fn maybe_establish(&mut self) {
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.phase == LeaderPhase::Active || !self.cfg.is_quorum(l.newleader_acks.iter()) {
            return;
        }
        l.phase = LeaderPhase::Active;
        let epoch = l.epoch;
        let ready: Vec<Id> = l
            .links
            .iter()
            .filter(|(_, k)| k.acked_newleader)
            .map(|(p, _)| *p)
            .collect();
        self.out.push(Output::Established(epoch));
        // The whole history is now committed in the new epoch.
        self.deliver_upto(self.last_zxid());
        let committed = self.delivered_zxid();
        for p in ready {
            self.lsend(p, Msg::UpToDate { committed });
        }
    }

    fn write(&mut self, data: Vec<u8>, forwarded_by: Option<Id>) {
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.phase != LeaderPhase::Active {
            return;
        }
        if l.counter >= 0xffff_fffe {
            // The counter would overflow: a new epoch is needed.
            self.look("the zxid counter is exhausted");
            return;
        }
        l.counter += 1;
        let txn = Txn {
            zxid: zxid(l.epoch, l.counter),
            data: data.into(),
        };
        let mut acked = BTreeSet::new();
        if self.cfg.broken_ack_before_sync {
            acked.insert(self.cfg.id);
        }
        l.acks.insert(
            txn.zxid,
            Waiting {
                acked,
                forwarded_by,
            },
        );
        let to: Vec<Id> = l
            .links
            .iter()
            .filter(|(_, k)| k.sync_sent && !k.observer)
            .map(|(p, _)| *p)
            .collect();
        self.log.push(txn.clone());
        // Followers log the proposal while the leader does (as ZooKeeper's
        // leader sends before its own fsync). Its own ack counts once its
        // sync is done (`synced`); nothing else waits for that sync, so a
        // quorum of followers' acks commits without it.
        //
        // The runtime queues the proposals for the links' writer tasks,
        // which run after the core has handed the append to the storage
        // thread. A trace of 1x1 setData via a follower (3 members on
        // loopback, syscall tracepoints, p50 from the client's request
        // reaching the follower): the leader got it at 26 µs, its first
        // proposal left at 42 and its pwrite began at 51, the second at
        // 71; the other follower had its proposal at 81, the forwarder
        // at 92; the forwarder's own fsync ended at 308 and its reply
        // left at 389. Its reply left 68-74 µs after its own fsync when
        // that ended last (the ack's send, then the core's wake-up), but
        // 13-15 µs after the leader's `Msg::Logged` when that came last
        // (about half the writes; the leader sent it 49 µs after its own
        // fsync, the core's wake-up there, and 43 when it went straight
        // onto the socket). Sending the proposals sooner
        // was tried, fresh ensembles, 4 s runs, ops/s without / with:
        // - every proposal straight onto its socket when the link was
        //   idle: set 1x1 2,867, 2,318, 2,824, 2,510, 2,790 / 2,991,
        //   2,812, 2,875, 2,271, 2,773; set 16x32 63.8k, 63.2k, 54.4k /
        //   43.3k, 40.1k, 36.3k (a send call per proposal instead of
        //   one per burst);
        // - only the forwarder's, straight onto its socket, before the
        //   rest: set 1x1 2,748, 3,055, 3,161 / 2,504, 2,920, 3,032;
        //   multi10 1x1 2,056, 2,462, 2,469 / 2,222, 2,655, 2,289;
        //   create 1x1 10 KiB within noise; set 16x32 66.5k, 66.5k,
        //   71.5k / 58.2k, 67.6k, 50.4k.
        for p in to {
            self.lsend(p, Msg::Proposal(txn.clone()));
        }
        let z = txn.zxid;
        self.out.push(Output::Persist(Persist::Append(vec![txn])));
        self.out.push(Output::SyncThenAck(z));
        self.try_commit();
    }

    /// The leader's own log holds its proposals up to `z` durably.
    fn synced(&mut self, z: Zxid) {
        let me = self.cfg.id;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        for (_, w) in l.acks.range_mut(..=z) {
            w.acked.insert(me);
        }
        self.try_commit();
        self.tell_forwarders(z);
    }

    /// After the leader's own sync up to `z`: a learner that forwarded a
    /// txn still waiting for acks, and whose own copy makes a quorum with
    /// the leader's (3 voters), hears that the leader's log holds it. Its
    /// own sync then commits it there, without its ACK's trip to the
    /// leader and the COMMIT's back (ZooKeeper waits for both). Acks commit
    /// it as before (and the COMMIT is not sent to it). With 500 µs added each
    /// way between members (`scripts/bench.sh --ensemble --member-delay
    /// 500`, before -> after, ZooKeeper in the same runs): set 1x1 via a
    /// follower 312 -> 524 ops/s (ZooKeeper 261, 238), create 1x1 10 KiB
    /// 302 -> 454 (239, 240), set 4x1 1,290 -> 1,508 (944, 890). On
    /// loopback, within noise (4 alternations of the 1x1 and 16x32 rows).
    ///
    /// Tried and not kept: the same word between followers (each telling
    /// the other, after a proposal's sync, that its log holds it; two of
    /// three voters are a quorum too), so the forwarder commits on its
    /// fellow's sync. 3 members on loopback, 2 alternations of fresh
    /// ensembles, 4 s runs, ops/s before / with: delete 1x1 10 KiB
    /// 3,110, 3,471 / 3,518, 3,254; setData 1x1 3,420, 3,379 / 3,491,
    /// 3,538; multi10 1x1 3,149, 3,028 / 2,868, 3,012; create 1x1 10 KiB
    /// 2,550, 2,529 / 2,428, 2,441; setData 16x32 91.0k, 90.3k / 40.1k,
    /// 45.6k with a p99.9 of 0.5-1 s (likely the word per proposal, each
    /// a barrier at its receiver splitting its group commit; not measured
    /// further). A trace of the 1x1 delete: the word reached the forwarder
    /// ~20 µs before the COMMIT had, but its reply left no sooner (~280 µs
    /// into the cycle against ~270): the four event loops (client, three
    /// members) share one CPU there, and the word cost both followers a
    /// wake-up more.
    fn tell_forwarders(&mut self, z: Zxid) {
        let me = self.cfg.id;
        let Role::Leading(l) = &self.role else {
            return;
        };
        if l.acks.len() > LOGGED_WHILE_WAITING {
            return;
        }
        let mut upto: BTreeMap<Id, Zxid> = BTreeMap::new();
        for (&t, f) in l
            .acks
            .range(..=z)
            .filter_map(|(t, w)| Some((t, w.forwarded_by?)))
        {
            let follower = l.links.get(&f).is_some_and(|k| k.sync_sent && !k.observer);
            if follower && self.cfg.is_quorum([me, f].iter()) {
                upto.insert(f, t);
            }
        }
        for (f, t) in upto {
            self.lsend(f, Msg::Logged { zxid: t });
        }
    }

    fn try_commit(&mut self) {
        loop {
            let Role::Leading(l) = &mut self.role else {
                return;
            };
            if l.phase != LeaderPhase::Active {
                return;
            }
            let Some((&z, w)) = l.acks.iter().next() else {
                return;
            };
            if !self.cfg.is_quorum(w.acked.iter()) {
                return;
            }
            l.acks.remove(&z);
            // A serving follower told that the leader's log holds `z` or
            // later commits `z` behind its own sync without a COMMIT
            // (`Msg::Logged`), so it is sent none: one message less per
            // write on each side, on the path of the write's client. Told
            // before its UPTODATE, it ignored the word and gets the COMMIT.
            // 3 members on loopback, 1x1 setData 100 B via a follower:
            // TCP segments per write 19.2 -> 17.9; fresh ensembles, 3
            // alternations of 4 s, medians: set 1x1 2,596 -> 2,743 ops/s,
            // multi10 1x1 2,144 -> 2,252, create 1x1 10 KiB 1,677 ->
            // 1,750, multi10 16x32 17.1k -> 18.4k (each within this
            // machine's noise alone; none went down).
            //
            // Tried and not kept: the COMMIT to such a follower too when
            // its own ack is not among the quorum's (the leader and the
            // other follower were quicker; a trace had its reply leave
            // ~100 µs after that quorum, behind its own sync). Fresh
            // ensembles, delete 1x1 via a follower, 7 alternations, ops/s
            // before / with: 2,098, 2,193, 2,450, 2,122, 2,221, 2,202,
            // 2,704 / 879, 2,336, 2,176, 2,228, 1,992, 2,655, 2,691
            // (medians 2,202 / 2,228): within noise.
            let followers: Vec<Id> = l
                .links
                .iter()
                .filter(|(_, k)| k.sync_sent && !k.observer && k.logged < z)
                .map(|(p, _)| *p)
                .collect();
            let observers: Vec<Id> = l
                .links
                .iter()
                .filter(|(_, k)| k.sync_sent && k.observer)
                .map(|(p, _)| *p)
                .collect();
            // The commit goes out before the leader applies the txn
            // itself, as ZooKeeper's leader does: a follower's client waits
            // for it, and the leader's own apply (a 10 KiB create's copy
            // into the tree, its reply) need not delay that. The order
            // among followers is the links' (by id; the runtime's writer
            // tasks may send them in another). Sending the forwarder's
            // first, and straight onto its socket, was tried: 3 members
            // on loopback, 4 alternations, medians, ops/s: delete 1x1
            // 10 KiB 3,025 -> 3,097, setData 1x1 3,509 -> 3,384, multi10
            // 1x1 3,097 -> 3,128, create 1x1 10 KiB 2,586 -> 2,512 (lower
            // in all 4). A trace: the forwarder's reply left first, and
            // the other follower's apply then ran while the client woke,
            // on the same CPU.
            for p in followers {
                self.lsend(p, Msg::Commit { zxid: z });
            }
            if let Some(t) = self.log.iter().rev().find(|t| t.zxid == z).cloned() {
                for p in observers {
                    self.lsend(p, Msg::Inform(t.clone()));
                }
            }
            self.deliver_upto(z);
        }
    }

    // ---------------------------------------------------------------- learner

    fn follow(&mut self, leader: Id) {
        self.early_infos.clear();
        let observer = !self.cfg.is_voter(self.cfg.id);
        self.next_conn += 1;
        let conn = self.next_conn;
        self.role = Role::Learning(Learning {
            leader,
            observer,
            phase: LearnerPhase::Connecting,
            stream: Stream {
                conn,
                send_seq: 0,
                recv_seq: 0,
            },
            last_heard: self.now,
            commit_target: 0,
            info_sent_at: self.now,
        });
        let (accepted_epoch, last_zxid) = (self.accepted_epoch, self.last_zxid());
        self.fsend(Msg::FollowerInfo {
            accepted_epoch,
            last_zxid,
            observer,
        });
    }

    fn fsend(&mut self, msg: Msg) {
        if let Role::Learning(f) = &mut self.role {
            let env = f.stream.stamp(msg);
            self.out.push(Output::Send(f.leader, env));
        }
    }

    fn on_leader_msg(&mut self, from: Id, env: Envelope) {
        let now = self.now;
        let Role::Learning(f) = &mut self.role else {
            return;
        };
        if from != f.leader || env.conn != f.stream.conn {
            return;
        }
        if env.seq != f.stream.recv_seq + 1 {
            if env.seq > f.stream.recv_seq {
                self.look("a gap in the leader's stream");
            }
            return;
        }
        f.stream.recv_seq = env.seq;
        f.last_heard = now;
        match env.msg {
            Msg::LeaderInfo { epoch } => {
                if epoch < self.accepted_epoch {
                    self.look("the leader's epoch is older than one we accepted");
                    return;
                }
                if epoch > self.accepted_epoch {
                    self.accepted_epoch = epoch;
                    self.out
                        .push(Output::Persist(Persist::AcceptedEpoch(epoch)));
                    self.out.push(Output::Sync);
                }
                f.phase = LearnerPhase::Syncing;
                let (current_epoch, last_zxid) = (self.current_epoch, self.last_zxid());
                self.fsend(Msg::AckEpoch {
                    current_epoch,
                    last_zxid,
                });
            }
            Msg::Sync(Sync::Diff(txns)) => {
                if let Some(first) = txns.first() {
                    if first.zxid <= self.last_zxid() {
                        self.look("a DIFF overlapping our log");
                        return;
                    }
                }
                self.log.extend(txns.iter().cloned());
                self.out.push(Output::Persist(Persist::Append(txns)));
            }
            Msg::Sync(Sync::Snap { upto, state, log }) => {
                let ordered = log.windows(2).all(|w| w[0].zxid < w[1].zxid)
                    && log.first().is_none_or(|t| t.zxid > upto);
                if !ordered {
                    self.look("a malformed SNAP");
                    return;
                }
                // Never cut below what was delivered: a state older than
                // ours must come with every txn we delivered after it.
                let mine = self.delivered_zxid();
                if upto < mine {
                    let covered = log.iter().any(|t| t.zxid == mine)
                        && self.log[..self.delivered]
                            .iter()
                            .filter(|t| t.zxid > upto)
                            .all(|t| log.iter().any(|x| x == t));
                    if !covered {
                        self.diverged = true;
                        self.out.push(Output::Diverged(format!(
                            "snapshot from {from} at 0x{upto:x} does not contain our delivered txns up to 0x{mine:x}"
                        )));
                        return;
                    }
                }
                self.base = upto;
                self.log = log.clone();
                self.delivered = 0;
                self.delivered_bytes = 0;
                self.out.push(Output::Persist(Persist::Snapshot {
                    upto,
                    state: std::sync::Arc::new(state),
                    log,
                }));
            }
            Msg::NewLeader { epoch } => {
                // The synced txns first, then the epoch, then the ack.
                self.out.push(Output::Sync);
                self.current_epoch = epoch;
                self.out.push(Output::Persist(Persist::CurrentEpoch(epoch)));
                self.out.push(Output::Sync);
                self.fsend(Msg::AckNewLeader { epoch });
            }
            Msg::UpToDate { committed } => {
                f.phase = LearnerPhase::Synced;
                let target = committed.max(f.commit_target);
                self.deliver_upto(target);
            }
            Msg::Proposal(txn) => {
                if f.observer || txn.zxid <= self.last_zxid() {
                    return;
                }
                let z = txn.zxid;
                self.log.push(txn.clone());
                if self.cfg.broken_ack_before_sync {
                    self.fsend(Msg::Ack { zxid: z });
                }
                self.out.push(Output::Persist(Persist::Append(vec![txn])));
                self.out.push(Output::Sync);
                if !self.cfg.broken_ack_before_sync {
                    self.fsend(Msg::Ack { zxid: z });
                }
            }
            Msg::Commit { zxid } => {
                f.commit_target = f.commit_target.max(zxid);
                let synced = f.phase == LearnerPhase::Synced;
                if zxid > self.last_zxid() {
                    self.look("told to commit a txn we never logged");
                    return;
                }
                if synced {
                    // Committed by a quorum: need not wait for our sync.
                    self.deliver(zxid, Output::DeliverCommitted);
                }
            }
            Msg::Logged { zxid } => {
                // The leader's log holds every txn up to `zxid` durably,
                // and ours will once the barrier passes: if the two are a
                // quorum, those txns are committed (what the leader's
                // COMMIT would say after our ACK reached it).
                let (leader, synced, observer) =
                    (f.leader, f.phase == LearnerPhase::Synced, f.observer);
                let upto = zxid.min(self.last_zxid());
                if synced
                    && !observer
                    && upto > self.delivered_zxid()
                    && self.cfg.is_quorum([self.cfg.id, leader].iter())
                {
                    self.out.push(Output::Sync);
                    self.deliver_upto(upto);
                }
            }
            Msg::Inform(txn) => {
                if txn.zxid > self.last_zxid() {
                    self.log.push(txn.clone());
                    self.out
                        .push(Output::Persist(Persist::Append(vec![txn.clone()])));
                }
                if let Role::Learning(f) = &mut self.role {
                    f.commit_target = f.commit_target.max(txn.zxid);
                    if f.phase == LearnerPhase::Synced {
                        self.deliver_upto(txn.zxid);
                    }
                }
            }
            Msg::Ping { .. } => self.fsend(Msg::PingAck),
            _ => {}
        }
    }

    // ---------------------------------------------------------------- common

    fn deliver_upto(&mut self, z: Zxid) {
        self.deliver(z, Output::Deliver);
    }

    /// Delivers the logged txns up to `z` as `output` (`Deliver`, or
    /// `DeliverCommitted` for those a COMMIT covers).
    fn deliver(&mut self, z: Zxid, output: fn(Txn) -> Output) {
        let mut last = None;
        while self.delivered < self.log.len() && self.log[self.delivered].zxid <= z {
            let t = self.log[self.delivered].clone();
            last = Some(t.zxid);
            self.delivered_bytes += t.data.len();
            self.out.push(output(t));
            self.delivered += 1;
        }
        if let Some(z) = last {
            self.out.push(Output::Persist(Persist::Applied(z)));
            self.maybe_compact();
        }
    }

    /// Drops delivered txns beyond what is kept for DIFFs, once enough
    /// have gathered (dropping a few at a time would cost a log deletion
    /// per delivery). Only delivered txns go: the applied state has them.
    fn maybe_compact(&mut self) {
        if self.delivered < self.cfg.snap_count && self.delivered_bytes < self.cfg.snap_bytes {
            return;
        }
        let keep_bytes = self.cfg.snap_bytes / 2;
        let mut drop = self.delivered.saturating_sub(self.cfg.log_keep.max(1));
        let mut kept: usize = self.log[drop..self.delivered]
            .iter()
            .map(|t| t.data.len())
            .sum();
        // The last delivered txn always stays (the leader informs
        // observers from it).
        while kept > keep_bytes && drop + 1 < self.delivered {
            kept -= self.log[drop].data.len();
            drop += 1;
        }
        if drop == 0 {
            return;
        }
        self.base = self.log[drop - 1].zxid;
        self.log.drain(..drop);
        self.delivered -= drop;
        self.delivered_bytes = kept;
        self.out.push(Output::Persist(Persist::Compact(self.base)));
    }

    fn on_msg(&mut self, from: Id, env: Envelope) {
        if let Msg::Vote(v) = env.msg {
            self.on_vote(from, v);
            return;
        }
        match &self.role {
            Role::Leading(_) => self.on_learner_msg(from, env),
            Role::Learning(_) => self.on_leader_msg(from, env),
            Role::Looking(_) => {
                if matches!(env.msg, Msg::FollowerInfo { .. }) {
                    self.early_infos.insert(from, env);
                }
            }
        }
    }

    fn disconnected(&mut self, p: Id) {
        match &mut self.role {
            Role::Leading(l) => {
                l.links.remove(&p);
            }
            Role::Learning(f) if f.leader == p => self.look("lost the connection to the leader"),
            _ => {}
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        let tick = self.cfg.tick_ms;
        let q = self.cfg.quorum();
        let committed = self.delivered_zxid();
        match &mut self.role {
            Role::Looking(e) => {
                if e.decide_at.is_some_and(|t| now >= t) {
                    self.decide();
                } else if now.saturating_sub(e.broadcast_at) >= 2 * self.cfg.finalize_wait_ms {
                    // Keep telling peers our vote: votes may be lost.
                    self.broadcast_vote();
                }
            }
            Role::Leading(l) => {
                if l.phase != LeaderPhase::Active {
                    if now.saturating_sub(l.started) > self.cfg.init_limit * tick {
                        self.look("no quorum synced within initLimit");
                    }
                    return;
                }
                // A learner being synced says nothing between its ACKEPOCH
                // and its NEWLEADER ack, while the state is read, sent and
                // installed (~2 s per million znodes here): it gets
                // initLimit + syncLimit ticks for that, as ZooKeeper's
                // LearnerHandler gives it (tickOfNextAckDeadline).
                let synced = self.cfg.sync_limit * tick;
                let syncing = (self.cfg.init_limit + self.cfg.sync_limit) * tick;
                l.links.retain(|_, k| {
                    let limit = if k.acked_newleader { synced } else { syncing };
                    now.saturating_sub(k.last_heard) <= limit
                });
                let heard = 1 + l
                    .links
                    .iter()
                    .filter(|(p, k)| {
                        k.acked_newleader && self.cfg.voters.contains(p) && !k.observer
                    })
                    .count();
                if heard < q {
                    // Lost the quorum: stop taking writes and elect again.
                    self.look("lost the quorum");
                    return;
                }
                if now.saturating_sub(l.pinged_at) < tick / 2 {
                    return;
                }
                l.pinged_at = now;
                let to: Vec<Id> = l
                    .links
                    .iter()
                    .filter(|(_, k)| k.sync_sent)
                    .map(|(p, _)| *p)
                    .collect();
                for p in to {
                    self.lsend(p, Msg::Ping { committed });
                }
            }
            Role::Learning(f) => {
                let limit = if f.phase == LearnerPhase::Synced {
                    self.cfg.sync_limit
                } else {
                    self.cfg.init_limit
                };
                if now.saturating_sub(f.last_heard) > limit * tick {
                    self.look("the leader was silent too long");
                    return;
                }
                if f.phase == LearnerPhase::Connecting
                    && now.saturating_sub(f.info_sent_at) >= 2 * self.cfg.finalize_wait_ms
                {
                    // The leader may not have been leading yet when our
                    // FOLLOWERINFO came (it drops learner messages while it
                    // looks): ask again, on a fresh stream.
                    self.next_conn += 1;
                    f.info_sent_at = now;
                    f.stream = Stream {
                        conn: self.next_conn,
                        send_seq: 0,
                        recv_seq: 0,
                    };
                    let observer = f.observer;
                    let (accepted_epoch, last_zxid) = (self.accepted_epoch, self.last_zxid());
                    self.fsend(Msg::FollowerInfo {
                        accepted_epoch,
                        last_zxid,
                        observer,
                    });
                }
            }
        }
    }
}

fn self_vote(cfg: &Config, last_zxid: Zxid, current_epoch: u64, round: u64) -> Vote {
    if cfg.voters.contains(&cfg.id) {
        Vote {
            leader: cfg.id,
            zxid: last_zxid,
            peer_epoch: current_epoch,
            round,
            state: PeerState::Looking,
        }
    } else {
        Vote {
            leader: 0,
            zxid: 0,
            peer_epoch: 0,
            round,
            state: PeerState::Looking,
        }
    }
}
