//! Carrying out ZAB's outputs, in order, for the core task.
//!
//! The one rule: an `Output::Sync` is a barrier. Everything persisted before
//! it goes to the storage thread as one synced write, and nothing after it
//! happens until the storage thread answers that write's ticket. Appends
//! queued after it join that write (`pending`), so a burst of proposals
//! costs one fsync.
//!
//! The leader's own ack of its proposals (`Output::SyncThenAck`) is no
//! barrier: it rides on the next synced write, and ZAB hears of it
//! (`Input::Synced`) when that write's ticket is answered, while commits
//! that the followers' acks alone allow go out meanwhile.
//!
//! A learner's ack right behind a barrier is not left for the core: the
//! storage thread sends it as soon as the write is synced (`link`), which
//! saves waking the core first.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use zkd_core::server::{Role, Server};
use zkd_zab::peer::{Input, Output, Persist as ZPersist};
use zkd_zab::types::{Id, PeerState};

use super::hold::{Snap, SnapRead};
use super::link::Link;
use super::transport::PeerEvent;
use super::wire::Frame;
use crate::runtime::{Core, Job};

/// How long a delivered txn's checkpoint records may wait for the next
/// log write (at most about a core tick more: the core looks again then).
const CHECKPOINT_WAIT: Duration = Duration::from_millis(20);

/// How many steps' checkpoint records may wait.
const CHECKPOINT_WAIT_STEPS: usize = 64;

/// Whether what is left for the storage thread at the end of a drain may
/// wait for the next write instead of going now: only the checkpoint
/// (tree records, the applied zxid), which no one waits for; a crash
/// redoes it from the log. Each delivered txn used to cost every member's
/// storage thread a second job (and wake-up) right after the one that
/// logged it. Two A/Bs on fresh 3-member ensembles (3 alternations of 4 s;
/// the same binary with and without, then against the commit before),
/// server CPU per op on the 1x1 rows, before -> after: set 100 B 757 ->
/// 727 and 736 -> 715 µs, multi10 100 B 933 -> 865 and 862 -> 840, create
/// 10 KiB 1,069 -> 997 and 1,075 -> 1,024, delete 10 KiB 844 -> 762 and
/// 821 -> 771. Ops/s moved within this machine's noise both times (delete
/// 1x1 10 KiB +7% and +6%, set 16x32 100 B +10% and +6%; 16x32 10 KiB
/// rows +16% then -9%).
fn checkpoint_can_wait(zab: &[ZPersist], tree_steps: usize, held_for: Option<Duration>) -> bool {
    zab.iter().all(|p| matches!(p, ZPersist::Applied(_)))
        && tree_steps < CHECKPOINT_WAIT_STEPS
        && held_for.is_none_or(|d| d < CHECKPOINT_WAIT)
}

/// On the thread that read the state: the SNAP `env` carries, with the
/// state, encoded as a frame (the whole tree: hundreds of MB at a million
/// znodes, copied here rather than on the core).
fn snap_frame(
    mut env: zkd_zab::peer::Envelope,
    read: Result<(u64, Vec<u8>), crate::storage::StoreError>,
    started: Instant,
) -> SnapRead {
    let (zxid, bytes) = match read {
        Ok(r) => r,
        Err(e) => return SnapRead::Failed(e.to_string()),
    };
    let zkd_zab::types::Msg::Sync(zkd_zab::types::Sync::Snap { upto, state, log }) = &mut env.msg
    else {
        unreachable!("SendSnap carries a snapshot");
    };
    if zxid != *upto {
        return SnapRead::NotSent(format!(
            "it should be at 0x{upto:x} but the store is at 0x{zxid:x}"
        ));
    }
    let log_bytes: usize = log.iter().map(|t| t.data.len() + 12).sum();
    if bytes.len() + log_bytes + 64 > super::wire::PEER_FRAME_MAX {
        // One frame carries the whole state; a peer refuses bigger ones.
        // The learner keeps retrying, and this says why.
        return SnapRead::NotSent(format!(
            "it is {} bytes, over the {} byte frame limit",
            bytes.len(),
            super::wire::PEER_FRAME_MAX
        ));
    }
    let (state_bytes, log_txns) = (bytes.len(), log.len());
    *state = bytes;
    let frame = Frame::Zab(env).encode();
    // The state was copied into the frame and is freed now; a leader
    // left idle would otherwise keep its pages.
    crate::purge::release_freed_memory();
    SnapRead::Ready(Snap {
        frame,
        zxid,
        state_bytes,
        log_txns,
        started,
    })
}

impl Core {
    fn zab_now(&self) -> u64 {
        let z = self.zab.as_ref().expect("ensemble mode");
        z.clock_base + self.clock.now().mono_ms as u64
    }

    /// After a client step in ensemble mode: hand the leader's prepared
    /// txns to ZAB and the learner's forwarded requests to the leader; hold
    /// replies until what they describe is delivered. `forwarded_by`: the
    /// learner whose forwarded request the step prepared (ZAB tells it when
    /// the leader's log holds the txn).
    pub(crate) fn after_step_ensemble(&mut self, started: Instant, forwarded_by: Option<Id>) {
        let persist = self.server.take_persist();
        let role = self.server.role();
        let last = self.server.last_zxid();
        let z = self.zab.as_mut().expect("ensemble mode");
        if !persist.is_empty() {
            match role {
                Role::Leader => z.stash.push_back((last, persist)),
                _ => z.job_tree.push(persist),
            }
        }
        if role == Role::Leader {
            for (zxid, data) in self.server.take_proposals() {
                let Some(next) = z.peer.next_zxid() else {
                    // ZAB already left the role and the step-down is queued
                    // behind a sync: the txn is never proposed, its replies
                    // are dropped and the tree is read back when it runs.
                    log::debug!("not leading any more: 0x{zxid:x} is not proposed");
                    continue;
                };
                if next != zxid as u64 {
                    // The tree and ZAB disagree on the next zxid: serving on
                    // would mislabel txns. Stop; a restart recovers.
                    log::error!(
                        "event=divergence reason=\"prepared 0x{zxid:x} but ZAB's next zxid is {:?}\"",
                        z.peer.next_zxid()
                    );
                    crate::disk::exit_now(70);
                }
                let input = match forwarded_by {
                    Some(from) => Input::Forwarded(from, data),
                    None => Input::Write(data),
                };
                let outs = z.peer.step(input);
                z.pending.push(outs);
            }
        } else {
            self.send_forwards();
        }
        self.route_effects(started);
        self.drain();
    }

    /// Learner: requests the server wants the leader to prepare.
    fn send_forwards(&mut self) {
        let z = self.zab.as_mut().expect("ensemble mode");
        let leader = z.peer.leader().filter(|l| *l != z.peer.id());
        for f in self.server.take_forwards() {
            if let Some(l) = leader {
                z.transport.send(l, &Frame::Forward(f));
            }
        }
    }

    /// What the storage thread has written (it publishes the ticket, and
    /// sends a message only when asked to, by `ask_for_ticket`): the
    /// leader's own acks it synced, and the barrier it lifted.
    fn take_ticket(&mut self) {
        let ticket = self.reported.ticket.load(Ordering::SeqCst);
        let z = self.zab.as_mut().expect("ensemble mode");
        let mut synced = None;
        while let Some(&(t, zxid)) = z.own_acks.front() {
            if t > ticket {
                break;
            }
            z.own_acks.pop_front();
            synced = Some(zxid);
        }
        if let Some(zxid) = synced {
            let outs = z.peer.step(Input::Synced(zxid));
            z.pending.push(outs);
        }
        if z.waiting.is_some_and(|w| ticket >= w) {
            z.waiting = None;
        }
    }

    /// Whether the core must be woken when the storage thread answers its
    /// writes: outputs wait behind a barrier, or the leader's own acks
    /// wait for their sync. A learner whose only output behind the barrier
    /// was its ack (sent by the storage thread) is not woken; the next
    /// message from the leader finds the barrier lifted. Asks, then looks
    /// again: false if the answer came meanwhile (there is work now).
    fn ask_for_ticket(&mut self) -> bool {
        let z = self.zab.as_mut().expect("ensemble mode");
        let blocked = z.waiting.is_some() && !z.pending.is_empty();
        if !blocked && z.own_acks.is_empty() {
            return true;
        }
        let own = z.own_acks.front().map(|&(t, _)| t);
        let wanted = z.waiting.into_iter().chain(own).min().expect("checked");
        self.reported.waiting.store(true, Ordering::SeqCst);
        self.reported.ticket.load(Ordering::SeqCst) < wanted
    }

    pub(crate) fn on_peer_event(&mut self, ev: PeerEvent) {
        let started = Instant::now();
        let now = self.clock.now();
        let z = self.zab.as_mut().expect("ensemble mode");
        match ev {
            PeerEvent::Frame(from, Frame::Zab(env)) => {
                if env.msg.is_election() {
                    log::debug!("vote from server.{from}: {:?}", env.msg);
                } else {
                    z.last_frame = Some(started);
                    log::trace!("from server.{from}: {env:?}");
                }
                // The peer's clock advances on ticks only: a tick here
                // would also send pings, answered by more messages.
                let outs = z.peer.step(Input::Msg(from, env));
                z.pending.push(outs);
                self.drain();
            }
            PeerEvent::Disconnected(p) => {
                z.transport.drop_hold(p);
                let outs = z.peer.step(Input::Disconnected(p));
                z.pending.push(outs);
                self.drain();
            }
            PeerEvent::Frame(_, Frame::Forward(f)) => {
                if self.server.role() == Role::Leader && z.serving {
                    self.forwarded(f, started);
                } else if z.pending_epoch.is_some() {
                    z.early.push(f);
                }
                // Otherwise we are not leading: the learner finds out and
                // drops its clients, who retry elsewhere.
            }
            PeerEvent::Snap { to, token, snap } => self.snap_read(to, token, snap),
            PeerEvent::Frame(_, Frame::Touch(ids)) => {
                if self.server.role() == Role::Leader {
                    self.server.touch_sessions(now, &ids);
                }
            }
            PeerEvent::Frame(
                from,
                Frame::SyncDone {
                    session,
                    cxid,
                    upto,
                },
            ) => {
                if self.server.role() == Role::Learner && z.serving && z.peer.leader() == Some(from)
                {
                    self.server.sync_done(session, cxid, upto);
                    self.after_step(started);
                }
            }
        }
    }

    fn forwarded(&mut self, f: zkd_core::server::Forward, started: Instant) {
        let now = self.clock.now();
        let (origin, session, cxid) = (f.origin, f.session, f.cxid);
        if let Some(upto) = self.server.forwarded(now, f) {
            let z = self.zab.as_mut().expect("ensemble mode");
            z.transport.send(
                origin,
                &Frame::SyncDone {
                    session,
                    cxid,
                    upto,
                },
            );
        }
        self.after_step_ensemble(started, Some(origin));
    }

    /// Every core tick: ZAB's timers, and a learner's session touches.
    pub(crate) fn ensemble_tick(&mut self) {
        let now_ms = self.zab_now();
        let z = self.zab.as_mut().expect("ensemble mode");
        z.last_tick = Some(Instant::now());
        let outs = z.peer.step(Input::Tick(now_ms));
        z.pending.push(outs);
        let touch_every = (self.cfg.tick_time_ms as u64 / 2).max(10);
        if z.serving
            && self.server.role() == Role::Learner
            && now_ms.saturating_sub(z.last_touch_ms) >= touch_every
        {
            z.last_touch_ms = now_ms;
            let ids = self.server.local_sessions();
            if let Some(l) = z.peer.leader() {
                if !ids.is_empty() {
                    z.transport.send(l, &Frame::Touch(ids));
                }
            }
        }
        self.drain();
    }

    /// Queues `job` for the storage thread; without one, nothing that
    /// follows could be made durable, so the server stops.
    fn to_storage(&self, job: Job) {
        if self.storage.send(job).is_err() {
            log::error!("storage thread is gone, stopping");
            crate::disk::exit_now(70);
        }
    }

    fn send_job(&mut self, sync: bool) -> i64 {
        self.send_job_then(sync, None)
    }

    fn send_job_then(&mut self, sync: bool, then: Option<(Link, Vec<u8>)>) -> i64 {
        let z = self.zab.as_mut().expect("ensemble mode");
        let ticket = z.next_ticket;
        z.next_ticket += 1;
        if sync {
            if let Some(zxid) = z.own_ack.take() {
                z.own_acks.push_back((ticket, zxid));
            }
        }
        z.deferred_since = None;
        let job = Job::Ensemble {
            tree: std::mem::take(&mut z.job_tree),
            zab: std::mem::take(&mut z.job_zab),
            sync,
            ticket,
            then,
        };
        self.to_storage(job);
        ticket
    }

    /// A learner's acks of what the write at a barrier syncs
    /// (`Pending::take_acks`), to leave from the storage thread right
    /// after the sync as one frame buffer (`link`).
    fn acks_once_synced(z: &mut crate::ensemble::Zab) -> Option<(Link, Vec<u8>)> {
        let (leader, acks) = z.pending.take_acks()?;
        let mut bytes = Vec::new();
        for env in acks {
            log::trace!("to server.{leader}, once synced: {env:?}");
            bytes.extend_from_slice(&Frame::Zab(env).encode());
        }
        z.transport.quorum_link(leader).map(|link| (link, bytes))
    }

    /// Carries out queued outputs until a sync barrier must wait.
    pub(crate) fn drain(&mut self) {
        loop {
            self.drain_once();
            if self.ask_for_ticket() {
                return;
            }
        }
    }

    fn drain_once(&mut self) {
        self.take_ticket();
        loop {
            let z = self.zab.as_mut().expect("ensemble mode");
            // Behind a sync in progress, only what may pass it (a txn a
            // COMMIT covers): a follower's client then has its reply when
            // the COMMIT comes, not when the follower's own fsync ends too.
            // 3 members, the client's follower alone on the disk (the
            // other two on tmpfs), set 1x1 via that follower, 4 s runs
            // in three series of alternations: median 3,159 ops/s (7
            // runs, 3,124-3,505) -> 3,555 (10 runs, 3,037-4,306). All
            // three on one disk, 5 alternations, medians moved within
            // noise (set 1x1 +2%, multi10 1x1 -4%, set 16x32 -2%).
            let o = match z.waiting {
                Some(_) => z.pending.pop_if(Output::may_pass_sync),
                None => z.pending.pop(),
            };
            let Some(o) = o else {
                if z.waiting.is_some() {
                    return;
                }
                break;
            };
            match o {
                Output::Send(to, env) => {
                    if env.msg.is_election() {
                        log::debug!("vote to server.{to}: {:?}", env.msg);
                    } else {
                        log::trace!("to server.{to}: {env:?}");
                    }
                    z.transport.send(to, &Frame::Zab(env))
                }
                Output::SendSnap(to, env) => self.send_snap(to, env),
                Output::Persist(ZPersist::Snapshot { upto, state, log }) => {
                    self.install(upto, state, log)
                }
                Output::Persist(p) => z.job_zab.push(p),
                Output::Sync => {
                    if z.job_zab.is_empty()
                        && z.job_tree.is_empty()
                        && !z.unsynced
                        && z.own_ack.is_none()
                    {
                        continue;
                    }
                    // Group commit: later appends join this write.
                    z.pending.take_appends(&mut z.job_zab);
                    z.unsynced = false;
                    let then = Self::acks_once_synced(z);
                    let t = self.send_job_then(true, then);
                    self.zab.as_mut().expect("ensemble mode").waiting = Some(t);
                }
                // Joins the next synced write: the one a later barrier
                // makes, or the one at the end of this drain.
                Output::SyncThenAck(zxid) => z.own_ack = Some(zxid),
                Output::Deliver(txn) | Output::DeliverCommitted(txn) => self.deliver(txn),
                Output::Established(epoch) => {
                    z.pending_epoch = Some(epoch);
                }
                Output::Looking(why) => self.step_down(why),
                Output::Diverged(why) => {
                    log::error!("event=divergence reason=\"{why}\"");
                    crate::disk::exit_now(70);
                }
            }
        }
        // The queue is empty: write what is left without waiting (synced if
        // the leader's own ack rides on it), unless it is only the
        // checkpoint, which waits for the next write; then take up a role
        // the peer reached.
        let z = self.zab.as_mut().expect("ensemble mode");
        if z.own_ack.is_some() {
            z.unsynced = false;
            self.send_job(true);
        } else if !z.job_zab.is_empty() || !z.job_tree.is_empty() {
            let held_for = z.deferred_since.map(|t| t.elapsed());
            if checkpoint_can_wait(&z.job_zab, z.job_tree.len(), held_for) {
                z.deferred_since.get_or_insert_with(Instant::now);
            } else {
                self.send_unwritten();
            }
        }
        self.take_role();
    }

    /// What waits for the storage thread goes now, unsynced: at the end of
    /// a drain, before the store is read, and at a stop (less for the next
    /// start to redo from the log).
    pub(crate) fn send_unwritten(&mut self) {
        let z = self.zab.as_mut().expect("ensemble mode");
        if !z.job_zab.is_empty() || !z.job_tree.is_empty() {
            z.unsynced = true;
            self.send_job(false);
        }
    }

    /// Leader: a SNAP for a learner. The state is read in the background
    /// (`Store::read_state_in_background`), from a snapshot taken after
    /// everything delivered so far is written, so it is the state at the
    /// SNAP's `upto`. Meanwhile this member serves on, and what ZAB sends
    /// that learner waits behind the SNAP (`hold`); `snap_read` sends
    /// them. At 1,000,000 znodes (bench-scale.py, the leader's longest
    /// read while a wiped follower resyncs, one request at a time): 1,204
    /// ms when the core waited for the read (ZooKeeper 97 ms in that run),
    /// 39 ms now (ZooKeeper 60 ms).
    fn send_snap(&mut self, to: u64, env: zkd_zab::peer::Envelope) {
        let started = Instant::now();
        self.send_unwritten();
        let z = self.zab.as_mut().expect("ensemble mode");
        let token = z.transport.hold(to);
        let events = z.events_tx.clone();
        let job = Job::Read(Box::new(move |store| {
            let done = move |read| {
                let snap = snap_frame(env, read, started);
                let _ = events.send(PeerEvent::Snap { to, token, snap });
            };
            if let Err(e) = store.read_state_in_background(done) {
                log::error!("cannot read the applied state for a snapshot: {e}");
                crate::disk::exit_now(70);
            }
        }));
        self.to_storage(job);
    }

    /// The SNAP for `to` is read: it goes first, then what its hold kept.
    pub(crate) fn snap_read(&mut self, to: u64, token: u64, snap: SnapRead) {
        let z = self.zab.as_mut().expect("ensemble mode");
        match snap {
            SnapRead::Ready(s) => {
                let took_ms = s.started.elapsed().as_millis();
                let (zxid, bytes, log_txns) = (s.zxid, s.state_bytes, s.log_txns);
                if let Some(held) = z.transport.release(to, token, s.frame) {
                    log::info!(
                        "event=snapshot_sent to={to} zxid=0x{zxid:x} bytes={bytes} log_txns={log_txns} took_ms={took_ms} held_frames={held}"
                    );
                } else {
                    log::info!("snapshot for server.{to} not sent: its sync ended meanwhile");
                }
            }
            SnapRead::NotSent(why) => {
                log::error!("snapshot for server.{to} not sent: {why}");
                z.transport.drop_hold(to);
            }
            SnapRead::Failed(e) => {
                // As any store that cannot be read (`read_store`).
                log::error!("cannot read the applied state for a snapshot: {e}");
                crate::disk::exit_now(70);
            }
        }
    }

    /// Learner: install the leader's state in place of ours, on disk (one
    /// write with the new log) and in memory.
    fn install(
        &mut self,
        upto: u64,
        state: std::sync::Arc<Vec<u8>>,
        log: Vec<zkd_zab::types::Txn>,
    ) {
        let started = Instant::now();
        // The storage thread builds its write of the state meanwhile
        // (`Store::prepare_install`); it writes nothing before the job
        // below, which only a state found sound here sends.
        let prepare = std::sync::Arc::clone(&state);
        let job = Job::Read(Box::new(move |store| store.prepare_install(upto, prepare)));
        self.to_storage(job);
        let loaded = match super::state::load(&state) {
            Ok(l) if l.last_zxid as u64 == upto => l,
            Ok(l) => {
                self.refuse_snapshot(format!(
                    "state is at 0x{:x}, the snapshot says 0x{upto:x}",
                    l.last_zxid
                ));
                return;
            }
            Err(e) => {
                self.refuse_snapshot(e);
                return;
            }
        };
        let (bytes, txns) = (state.len(), log.len());
        let z = self.zab.as_mut().expect("ensemble mode");
        z.job_zab.push(ZPersist::Snapshot { upto, state, log });
        z.unsynced = true;
        self.send_job(false);
        self.replace_server(loaded);
        let now = self.clock.now();
        self.server.set_role(Role::Learner, 0, now);
        let _ = self.server.take_effects();
        self.durable = upto as i64;
        // The decoded state's staging is garbage now.
        crate::purge::release_freed_memory();
        log::info!(
            "event=snapshot_installed zxid=0x{upto:x} bytes={bytes} log_txns={txns} took_ms={}",
            started.elapsed().as_millis()
        );
    }

    /// ZAB has already taken the snapshot's log as its own, so serving on
    /// would pair that log with our old tree: stop instead (nothing is
    /// lost; a restart starts from what is on disk and syncs again).
    fn refuse_snapshot(&mut self, why: String) {
        let z = self.zab.as_ref().expect("ensemble mode");
        log::error!(
            "event=divergence reason=\"snapshot from server.{} refused: {why}\"",
            z.peer.leader().unwrap_or(0)
        );
        crate::disk::exit_now(70);
    }

    fn deliver(&mut self, txn: zkd_zab::types::Txn) {
        let started = Instant::now();
        let now = self.clock.now();
        if let Err(d) = self.server.apply_delivered(now, txn.zxid, &txn.data) {
            log::error!("event=divergence zxid=0x{:x} reason=\"{d}\"", txn.zxid);
            crate::disk::exit_now(70);
        }
        let persist = self.server.take_persist();
        // Answering a client may have released its next queued write.
        self.send_forwards();
        let z = self.zab.as_mut().expect("ensemble mode");
        if !persist.is_empty() {
            z.job_tree.push(persist);
        }
        let delivered = txn.zxid as i64;
        while z.stash.front().is_some_and(|(zx, _)| *zx <= delivered) {
            let (_, p) = z.stash.pop_front().expect("checked");
            z.job_tree.push(p);
        }
        self.route_effects(started);
        self.on_durable(delivered);
    }

    fn take_role(&mut self) {
        let now = self.clock.now();
        let now_ms = self.zab_now();
        let z = self.zab.as_mut().expect("ensemble mode");
        if let Some(epoch) = z.pending_epoch.take() {
            z.serving = true;
            let since = z.looking_since.take().map(|t| now_ms.saturating_sub(t));
            let learners = z.peer.learners();
            log::info!(
                "event=election role=leader id={} epoch={epoch} zxid=0x{:x} learners={} took_ms={}",
                z.peer.id(),
                z.peer.delivered_zxid(),
                learners.len(),
                since.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
            );
            let early = std::mem::take(&mut z.early);
            self.server.set_role(Role::Leader, epoch, now);
            self.route_effects(Instant::now());
            for f in early {
                self.forwarded(f, Instant::now());
            }
            return;
        }
        if !z.serving && z.peer.serving() && z.peer.state() != PeerState::Leading {
            z.serving = true;
            let since = z.looking_since.take().map(|t| now_ms.saturating_sub(t));
            log::info!(
                "event=election role={} id={} leader={} epoch={} zxid=0x{:x} took_ms={}",
                if z.peer.state() == PeerState::Observing {
                    "observer"
                } else {
                    "follower"
                },
                z.peer.id(),
                z.peer.leader().unwrap_or(0),
                z.peer.current_epoch(),
                z.peer.delivered_zxid(),
                since.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
            );
            self.server.set_role(Role::Learner, 0, now);
            self.route_effects(Instant::now());
        }
    }

    /// The peer left its role: stop serving, drop clients and anything
    /// waiting for txns that may never be delivered, and if this was a
    /// leader with undelivered txns in its tree, read the tree back from
    /// disk (which holds delivered txns only).
    fn step_down(&mut self, why: &str) {
        let now = self.clock.now();
        let now_ms = self.zab_now();
        let z = self.zab.as_mut().expect("ensemble mode");
        let was_serving = z.serving;
        z.serving = false;
        z.pending_epoch = None;
        z.early.clear();
        z.stash.clear();
        z.own_ack = None;
        z.own_acks.clear();
        // A SNAP still being read is not sent, nor what waits behind it.
        z.transport.drop_holds();
        if z.looking_since.is_none() {
            z.looking_since = Some(now_ms);
        }
        let delivered = z.peer.delivered_zxid() as i64;
        if was_serving {
            // Warn: the member's clients are disconnected and writes stop
            // until a leader is elected again.
            log::warn!(
                "event=election state=looking id={} was={:?} zxid=0x{:x} reason=\"{why}\" last_frame_ms={} last_tick_ms={}",
                z.peer.id(),
                self.server.role(),
                delivered,
                z.last_frame.map(|t| t.elapsed().as_millis() as i64).unwrap_or(-1),
                z.last_tick.map(|t| t.elapsed().as_millis() as i64).unwrap_or(-1),
            );
        }
        self.held.clear();
        for (_, out) in self.conns.drain() {
            out.close();
        }
        if self.server.last_zxid() > delivered {
            if !z.job_zab.is_empty() || !z.job_tree.is_empty() {
                self.send_job(false);
            }
            self.reload(delivered);
        }
        self.server.set_role(Role::Learner, 0, now);
        let _ = self.server.take_effects();
        let _ = self.server.take_proposals();
        let _ = self.server.take_forwards();
        let _ = self.server.take_persist();
    }

    /// Runs `read` on the storage thread once everything sent before it is
    /// written, and waits for its answer. A store that cannot be read
    /// stops the server (nothing acknowledged depends on what follows).
    fn read_store<T: Send + 'static>(
        &mut self,
        what: &str,
        read: impl FnOnce(&mut crate::storage::Store) -> Result<T, crate::storage::StoreError>
            + Send
            + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let job = Job::Read(Box::new(move |store| {
            let _ = tx.send(read(store));
        }));
        self.to_storage(job);
        match tokio::task::block_in_place(|| rx.recv()) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                log::error!("cannot read {what}: {e}");
                crate::disk::exit_now(70);
            }
            Err(_) => crate::disk::exit_now(70),
        }
    }

    fn reload(&mut self, delivered: i64) {
        let loaded = self.read_store("the tree back after stepping down", |s| s.load());
        if loaded.last_zxid != delivered {
            log::error!(
                "event=divergence reason=\"stepped down at delivered 0x{delivered:x} but the store holds 0x{:x}\"",
                loaded.last_zxid
            );
            crate::disk::exit_now(70);
        }
        log::info!(
            "stepped down with undelivered txns: tree read back at 0x{:x}",
            loaded.last_zxid
        );
        self.replace_server(loaded);
        self.durable = delivered;
    }

    /// A new server over a tree read from disk or installed from a
    /// leader's state; the counters `mntr` reports carry over.
    fn replace_server(&mut self, loaded: crate::storage::Loaded) {
        let counters = std::mem::take(&mut self.server.counters);
        self.server = Server::new(
            self.core_cfg.clone(),
            loaded.tree,
            loaded.last_zxid,
            loaded.sessions,
            self.clock.now(),
            self.seed,
        );
        self.server.counters = counters;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_checkpoint_waits_and_not_for_long() {
        let applied = [ZPersist::Applied(7)];
        assert!(checkpoint_can_wait(&applied, 1, None));
        assert!(checkpoint_can_wait(&[], 1, Some(Duration::from_millis(1))));
        // Held long enough, or enough of it: it goes.
        assert!(!checkpoint_can_wait(&applied, 1, Some(CHECKPOINT_WAIT)));
        assert!(!checkpoint_can_wait(&applied, CHECKPOINT_WAIT_STEPS, None));
        // Anything for the log or the epochs never waits.
        let txn = zkd_zab::types::Txn {
            zxid: 8,
            data: vec![1].into(),
        };
        assert!(!checkpoint_can_wait(
            &[ZPersist::Append(vec![txn])],
            0,
            None
        ));
        assert!(!checkpoint_can_wait(
            &[ZPersist::Applied(7), ZPersist::Compact(5)],
            0,
            None
        ));
        assert!(!checkpoint_can_wait(&[ZPersist::CurrentEpoch(2)], 0, None));
    }
}
