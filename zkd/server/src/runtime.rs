//! The thin shell around `zkd_core::server::Server`: one task owns it and is
//! the only place requests are decided; one OS thread owns RocksDB and makes
//! batches durable; connection tasks (see `net`) move bytes.
//!
//! Durability gate: every step of the core yields effects (frames, closes)
//! and perhaps a `Persist`. The effects wait in `held` until the storage
//! thread reports that everything up to the core's zxid at that step is
//! synced. While one sync runs, later persists queue up and go down together
//! in the next one (group commit).
//!
//! Standalone, a write's replies go with its `Persist` when nothing is held
//! (`Release`). After the sync, if the group has only a few replies, the
//! storage thread sends each straight onto its socket (or queues it, if the
//! writer is busy) and publishes the durable zxid (`Reported`); the core is
//! sent a message (woken) only when it holds effects waiting for that zxid.
//! Before, a tokio worker had to wake for the core, which woke the
//! connection's writer, which sent the reply: with the log on tmpfs (no
//! disk in the way) a lone create took p50 75-87 µs that way, 45-52 µs
//! this way. A group with more replies, or with more writes already
//! waiting for the next sync, goes back to the core as before
//! (`Report::back`): the core wakes the writers on its own worker, where
//! from the storage thread each wake crosses threads (all replies from the
//! storage thread: 16 connections x 32 creates in flight went from 100-104k
//! to 81-83k/s).
//!
//! Ensemble, the storage thread publishes the highest ticket it wrote and
//! sends the core a message only when the core asked for one (it has
//! outputs waiting behind that write, or the leader's own acks wait for
//! it). A learner's acks ride on the write that syncs what they ack
//! (`Job::Ensemble::then`) and leave from the storage thread right after
//! the sync, so a lone write on a follower no longer wakes its core
//! between its sync and its ack.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use zk_proto::records::ConnectRequest;
use zkd_core::out_frame::OutFrame;
use zkd_core::server::{Effect, Now, Persist, Server};
use zkd_core::session::ConnId;

use crate::config::Config;
use crate::fourlw;
use crate::jobq::{self, next_job, JobTx, Look};
use crate::outbox::{Outbox, Replier};
use crate::storage::Store;

/// What a connection task tells the core.
pub enum Msg {
    Connect {
        conn: ConnId,
        ip: String,
        port: u16,
        req: ConnectRequest,
        out: Outbox,
    },
    Packet {
        conn: ConnId,
        body: Vec<u8>,
    },
    Closed {
        conn: ConnId,
    },
    FourLetter {
        word: &'static str,
        reply: tokio::sync::oneshot::Sender<String>,
    },
}

/// Numbers the runtime measures itself (the core cannot see time passing).
#[derive(Default)]
pub struct Metrics {
    pub latency_min_us: AtomicU64,
    pub latency_max_us: AtomicU64,
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
}

impl Metrics {
    fn record(&self, us: u64, n: u64) {
        if n == 0 {
            return;
        }
        // Two threads record (the core, and the storage thread for the
        // replies it sends), so the minimum is kept with an atomic min.
        if self.latency_count.load(Ordering::Relaxed) == 0 {
            self.latency_min_us.store(us, Ordering::Relaxed);
        } else {
            self.latency_min_us.fetch_min(us, Ordering::Relaxed);
        }
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us * n, Ordering::Relaxed);
        self.latency_count.fetch_add(n, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.latency_min_us.store(0, Ordering::Relaxed);
        self.latency_max_us.store(0, Ordering::Relaxed);
        self.latency_sum_us.store(0, Ordering::Relaxed);
        self.latency_count.store(0, Ordering::Relaxed);
    }
}

/// Reply latencies of one connection, in ms.
#[derive(Default, Clone, Copy)]
pub struct Latency {
    pub last: u64,
    pub min: u64,
    pub max: u64,
    pub sum: u64,
    pub count: u64,
}

impl Latency {
    fn record(&mut self, ms: u64) {
        self.min = if self.count == 0 {
            ms
        } else {
            self.min.min(ms)
        };
        self.max = self.max.max(ms);
        self.last = ms;
        self.sum += ms;
        self.count += 1;
    }
}

/// Replies that wait for their write's sync on the storage thread, which
/// sends them itself (see the module comment). Only replies, in the order
/// the core made them; nothing held by the core is older.
pub struct Release {
    started: Instant,
    sends: Vec<(ConnId, Replier, OutFrame)>,
}

/// What the storage thread publishes without a message.
#[derive(Default)]
pub(crate) struct Reported {
    /// Durable, and every reply attached to a write up to it handed over.
    durable: AtomicI64,
    /// Ensemble: the highest ticket written.
    pub(crate) ticket: AtomicI64,
    /// Standalone: the core holds effects; ensemble: the core has work
    /// behind a ticket. Send it the next report (wake it).
    pub(crate) waiting: AtomicBool,
    /// Replies handed over: connection, xid, µs since the request's step
    /// began; the core takes them for `cons` and the slow-request log.
    sent: Mutex<Vec<(ConnId, i32, u64)>>,
    /// Reports with `back` sent and not yet handled by the core: until
    /// none is left, later replies go back too (they must not overtake).
    backs: AtomicUsize,
    /// Standalone jobs sent and not yet taken by the storage thread: with
    /// more writes waiting, its time is better spent on their sync.
    queued: AtomicUsize,
    /// Replies attached to writes and not yet handed over (for
    /// `zk_outstanding_requests`).
    attached: AtomicUsize,
}

/// What the storage thread sends the core: standalone, a durable zxid
/// (with the replies it hands back, if any); ensemble, the highest ticket.
pub struct Report {
    pub zxid: i64,
    back: Option<Vec<Release>>,
}

/// With at most this many replies in a synced group, and no write waiting
/// for the next sync, the storage thread sends them itself; otherwise they
/// go back to the core.
const DIRECT_MAX: usize = 8;

pub(crate) struct Held {
    need_zxid: i64,
    started: Instant,
    effects: Vec<Effect>,
}

pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn now(&self) -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Now {
            wall_ms,
            mono_ms: self.start.elapsed().as_millis() as i64,
        }
    }
}

/// Work for the storage thread, done in the order sent.
pub enum Job {
    /// Standalone: a step's changes, perhaps with its replies; answered
    /// with the zxid now durable.
    Standalone(Persist, Option<Release>),
    /// Ensemble: tree changes and ZAB persists, answered with `ticket`
    /// once written (and synced, with `sync`); `then` (a learner's ack) is
    /// sent once synced, before the answer.
    Ensemble {
        tree: Vec<Persist>,
        zab: Vec<zkd_zab::peer::Persist>,
        sync: bool,
        ticket: i64,
        then: Option<(crate::ensemble::link::Link, Vec<u8>)>,
    },
    /// Everything before it written, a read of the store (a leader that
    /// stepped down reading its tree back; the closure sends its answer),
    /// or work that writes nothing (a leader starting the read of its state
    /// for a SNAP on a thread of its own, `Store::read_state_in_background`;
    /// a learner's snapshot turned into its write, `Store::prepare_install`).
    Read(Box<dyn FnOnce(&mut Store) + Send>),
}

impl Job {
    fn installs_snapshot(&self) -> bool {
        matches!(self, Job::Ensemble { zab, .. }
            if zab.iter().any(|p| matches!(p, zkd_zab::peer::Persist::Snapshot { .. })))
    }
}

/// The jobs the storage thread took in one go, merged into one write.
#[derive(Default)]
struct Group {
    standalone: Vec<Persist>,
    releases: Vec<Release>,
    tree: Vec<Persist>,
    zab: Vec<zkd_zab::peer::Persist>,
    sync: bool,
    ticket: Option<i64>,
    then: Vec<(crate::ensemble::link::Link, Vec<u8>)>,
}

impl Group {
    fn add(&mut self, job: Job) {
        match job {
            Job::Standalone(p, r) => {
                self.standalone.push(p);
                self.releases.extend(r);
            }
            Job::Ensemble {
                tree,
                zab,
                sync,
                ticket,
                then,
            } => {
                self.tree.extend(tree);
                self.zab.extend(zab);
                self.sync |= sync;
                self.ticket = Some(ticket);
                self.then.extend(then);
            }
            Job::Read(_) => unreachable!("reads are not merged"),
        }
    }

    /// Writes the group, calling `report` with what it made durable (a
    /// zxid, standalone; the ticket, ensemble) as soon as the log is
    /// synced, before the tree's records go to RocksDB: nothing answered
    /// reads RocksDB, and a crash redoes those records from the log. Returns
    /// `report`'s answer (false: nobody listens any more).
    /// A storage error is fatal (fail-stop): the tree in memory is ahead of
    /// the disk and nothing in this group was acknowledged; a restart
    /// recovers from what is durable.
    fn write(
        mut self,
        store: &mut Store,
        fsync_warning_ms: u64,
        report: impl FnOnce(i64, Vec<Release>, bool) -> bool,
    ) -> bool {
        let releases = std::mem::take(&mut self.releases);
        let t = Instant::now();
        let txns = self.standalone.iter().map(|p| p.log.len()).sum::<usize>()
            + self
                .zab
                .iter()
                .map(|p| match p {
                    zkd_zab::peer::Persist::Append(v) => v.len(),
                    _ => 0,
                })
                .sum::<usize>();
        let mut listening = true;
        let result = if !self.standalone.is_empty() {
            store.commit_log(&self.standalone).and_then(|last| {
                listening = report(last, releases, true);
                store.commit_tree(&mut self.standalone, last)
            })
        } else if let Some(ticket) = self.ticket {
            store
                .commit_ensemble_log(&self.tree, &self.zab, self.sync)
                .and_then(|tree_follows| {
                    // Only jobs with `sync` carry `then`, so the group
                    // was synced.
                    //
                    // Tried and not kept: reporting first (the core starts
                    // waking), then sending the acks under the link's lock
                    // (so the woken core cannot overtake them on the
                    // stream). Traces of delete 1x1 via a follower (3
                    // members on loopback, syscall tracepoints): when the
                    // follower's own sync ended last, its reply left p50
                    // 79 and 90 µs after it before, 46 and 66 with it. But
                    // untraced, fresh ensembles, 4 alternations, ops/s
                    // before / with: delete 1x1 2,884, 3,026, 2,550, 2,768
                    // / 2,876, 2,476, 2,623, 2,629; setData 1x1 2,634,
                    // 2,780, 2,846, 3,104 / 2,700, 2,965, 2,819, 2,761;
                    // multi10 1x1 2,497, 2,683, 2,232, 2,243 / 2,523,
                    // 2,451, 2,512, 2,480: within noise.
                    for (link, frame) in self.then.drain(..) {
                        link.send_now(frame);
                    }
                    listening = report(ticket, releases, false);
                    if tree_follows {
                        store.commit_ensemble_tree(&mut self.tree, &self.zab)
                    } else {
                        Ok(())
                    }
                })
        } else {
            Ok(())
        };
        let ms = t.elapsed().as_millis() as u64;
        if ms >= fsync_warning_ms {
            log::warn!(
                "event=slow_fsync duration_ms={ms} txns={txns} threshold_ms={fsync_warning_ms}"
            );
        }
        if let Err(e) = result {
            log::error!("cannot make transactions durable, stopping: {e}");
            crate::disk::exit_now(70)
        }
        listening
    }
}

/// Starts the storage thread; it answers each group it writes with the
/// zxid now durable (standalone) or the highest ticket (ensemble).
fn spawn_storage(
    mut store: Store,
    durable_tx: mpsc::UnboundedSender<Report>,
    shared: (Arc<Reported>, Arc<Metrics>),
    cfg: &Config,
) -> (JobTx<Job>, std::thread::JoinHandle<()>) {
    let (tx, rx) = jobq::channel::<Job>();
    let fsync_warning_ms = cfg.fsync_warning_ms;
    let output_max = cfg.connection_output_bytes_max;
    let ensemble = !cfg.servers.is_empty();
    let idle_spin = cfg.sync_idle_spin();
    let handle = std::thread::Builder::new()
        .name("zkd-storage".into())
        .spawn(move || {
            if idle_spin {
                if let Some(awake) = crate::awake::Awake::start() {
                    store.keep_cpu_awake(awake);
                }
            }
            let (reported, metrics) = shared;
            let flush = |group: Group, store: &mut Store| {
                group.write(store, fsync_warning_ms, |zxid, releases, standalone| {
                    if !standalone {
                        // The core is woken only if it has work behind
                        // this ticket; otherwise it reads the ticket when
                        // something else wakes it (see `driver`).
                        reported.ticket.store(zxid, Ordering::SeqCst);
                        if reported.waiting.swap(false, Ordering::SeqCst) {
                            return durable_tx.send(Report { zxid, back: None }).is_ok();
                        }
                        return !durable_tx.is_closed();
                    }
                    let n: usize = releases.iter().map(|r| r.sends.len()).sum();
                    if n > DIRECT_MAX
                        || reported.queued.load(Ordering::SeqCst) > 0
                        || reported.backs.load(Ordering::SeqCst) > 0
                    {
                        reported.backs.fetch_add(1, Ordering::SeqCst);
                        let back = Some(releases);
                        return durable_tx.send(Report { zxid, back }).is_ok();
                    }
                    hand_over(releases, &reported, &metrics, output_max);
                    // Published after the hand-over: the core answers
                    // anything at or below it at once, and those answers
                    // must not overtake these.
                    reported.durable.store(zxid, Ordering::SeqCst);
                    if reported.waiting.swap(false, Ordering::SeqCst) {
                        return durable_tx.send(Report { zxid, back: None }).is_ok();
                    }
                    !durable_tx.is_closed()
                })
            };
            let mut look = Look::new(ensemble);
            while let Some(first) = next_job(&rx, &mut look, |waited| store.idle(waited)) {
                let mut group = Group::default();
                for job in std::iter::once(first).chain(rx.try_iter()) {
                    if matches!(job, Job::Standalone(..)) {
                        reported.queued.fetch_sub(1, Ordering::SeqCst);
                    }
                    match job {
                        Job::Read(read) => {
                            if !flush(std::mem::take(&mut group), &mut store) {
                                return;
                            }
                            read(&mut store);
                        }
                        // A snapshot replaces the tree: the tree changes
                        // before it must not be written after it, nor
                        // later ones before it, so it is a group alone.
                        job if job.installs_snapshot() => {
                            if !flush(std::mem::take(&mut group), &mut store) {
                                return;
                            }
                            let mut alone = Group::default();
                            alone.add(job);
                            if !flush(alone, &mut store) {
                                return;
                            }
                            // The state it carried (the whole tree) is freed.
                            crate::purge::release_freed_memory();
                        }
                        job => group.add(job),
                    }
                }
                if !flush(group, &mut store) {
                    return;
                }
            }
            drop(store);
            log::debug!("store closed");
        })
        .expect("spawn storage thread");
    (tx, handle)
}

/// The storage thread's side of `Release`, once synced: each reply to its
/// connection, in order.
fn hand_over(releases: Vec<Release>, reported: &Reported, metrics: &Metrics, output_max: usize) {
    if releases.is_empty() {
        return;
    }
    let mut sent = Vec::new();
    for r in releases {
        reported
            .attached
            .fetch_sub(r.sends.len(), Ordering::Relaxed);
        let us = r.started.elapsed().as_micros() as u64;
        metrics.record(us, r.sends.len() as u64);
        for (conn, out, bytes) in r.sends {
            let xid = xid_of(bytes.head());
            // Replies, not watch events, as in `Core::release`.
            if xid != -1 {
                sent.push((conn, xid, us));
            }
            if over_output_max(conn, out.push_now(bytes), output_max) {
                // The core forgets the connection when its reader reports
                // it closed.
                out.close();
            }
        }
    }
    reported
        .sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(sent);
}

/// Only watch events and replies already in flight get past the reader's
/// throttle: a connection with more than `max` bytes waiting belongs to a
/// client that has stopped reading, and is cut loose.
fn over_output_max(conn: ConnId, queued: usize, max: usize) -> bool {
    if queued <= max {
        return false;
    }
    log::warn!(
        "closing connection 0x{conn:x}: {queued} bytes waiting to be sent, over connectionOutputBytesMax"
    );
    true
}

fn xid_of(frame: &[u8]) -> i32 {
    frame
        .get(4..8)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

pub struct Core {
    pub server: Server,
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub(crate) clock: Clock,
    pub(crate) conns: HashMap<ConnId, Outbox>,
    /// Reply latency per connection, for `cons`.
    pub latency: HashMap<ConnId, Latency>,
    pub(crate) held: VecDeque<Held>,
    /// Standalone: the last durable zxid. Ensemble: the last delivered one.
    pub(crate) durable: i64,
    pub(crate) reported: Arc<Reported>,
    pub(crate) storage: JobTx<Job>,
    storage_thread: std::thread::JoinHandle<()>,
    pub started: Instant,
    /// The core's configuration, to rebuild the server from disk.
    pub(crate) core_cfg: zkd_core::server::Config,
    pub(crate) seed: u64,
    /// Ensemble mode: ZAB, the peers and what is in flight between them.
    pub zab: Option<crate::ensemble::Zab>,
}

impl Core {
    pub fn new(
        cfg: Arc<Config>,
        mut store: Store,
        durable_tx: mpsc::UnboundedSender<Report>,
    ) -> Result<Core, String> {
        let loaded = store.load().map_err(|e| e.to_string())?;
        let ensemble = !cfg.servers.is_empty();
        let zab_state = crate::ensemble::check_store(&mut store, ensemble, &loaded)?;
        let clock = Clock {
            start: Instant::now(),
        };
        let now = clock.now();
        let core_cfg = zkd_core::server::Config {
            server_id: cfg.my_id as i64,
            tick_ms: cfg.tick_time_ms,
            min_session_timeout_ms: cfg.min_session_timeout_ms,
            max_session_timeout_ms: cfg.max_session_timeout_ms,
            extended_types: cfg.extended_types,
            reap_interval_ms: cfg.container_check_interval_ms,
            reap_per_minute_max: cfg.container_max_per_minute,
            super_digest: cfg.super_digest.clone(),
            enforce_quota: cfg.enforce_quota,
        };
        log::info!(
            "loaded {} znodes and {} sessions, last zxid 0x{:x}",
            loaded.tree.node_count(),
            loaded.sessions.len(),
            loaded.last_zxid
        );
        let seed = {
            let mut b = [0u8; 8];
            // Session passwords must not be guessable: seed from the OS.
            b.copy_from_slice(&rand::random::<[u8; 8]>());
            u64::from_le_bytes(b)
        };
        let durable = loaded.last_zxid;
        let reported = Arc::new(Reported::default());
        reported.durable.store(durable, Ordering::SeqCst);
        let metrics = Arc::new(Metrics::default());
        let (storage, storage_thread) =
            spawn_storage(store, durable_tx, (reported.clone(), metrics.clone()), &cfg);
        let server = Server::new(
            core_cfg.clone(),
            loaded.tree,
            loaded.last_zxid,
            loaded.sessions,
            now,
            seed,
        );
        Ok(Core {
            server,
            cfg,
            metrics,
            reported,
            clock,
            conns: HashMap::new(),
            latency: HashMap::new(),
            held: VecDeque::new(),
            durable,
            storage,
            storage_thread,
            started: Instant::now(),
            core_cfg,
            seed,
            zab: None,
        })
        .and_then(|mut core| {
            if let Some(d) = zab_state {
                crate::ensemble::start(&mut core, d)?;
            }
            Ok(core)
        })
    }

    /// Requests of a connection read and not yet answered (`cons` queued=).
    pub fn requests_in_flight(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map(|o| o.requests()).unwrap_or(0)
    }

    pub fn outstanding(&self) -> usize {
        self.held.iter().map(|h| h.effects.len()).sum::<usize>()
            + self.reported.attached.load(Ordering::Relaxed)
    }

    /// Collects what the last step produced and either releases it or holds
    /// it until its state is durable.
    pub(crate) fn after_step(&mut self, started: Instant) {
        if self.zab.is_some() {
            return self.after_step_ensemble(started, None);
        }
        let persist = self.server.take_persist();
        if persist.is_empty() {
            return self.route_effects(started);
        }
        let release = self.attachable(started);
        self.reported.queued.fetch_add(1, Ordering::SeqCst);
        // Where the reply's client most likely sleeps (`awake`); only the
        // helpers read it.
        if self.cfg.sync_idle_spin() {
            crate::awake::note_requester();
        }
        if self
            .storage
            .send(Job::Standalone(persist, release))
            .is_err()
        {
            log::error!("storage thread is gone, stopping");
            std::process::exit(70);
        }
        self.route_effects(started);
    }

    /// The step's effects as a `Release` for the storage thread, if they
    /// are all replies and nothing older is held (which must go first).
    fn attachable(&mut self, started: Instant) -> Option<Release> {
        let effects = self.server.peek_effects();
        if !self.held.is_empty() || effects.is_empty() {
            return None;
        }
        let ok = effects
            .iter()
            .all(|e| matches!(e, Effect::Send(c, _) if self.conns.contains_key(c)));
        if !ok {
            return None;
        }
        let sends: Vec<_> = self
            .server
            .take_effects()
            .into_iter()
            .map(|e| match e {
                Effect::Send(c, bytes) => (c, self.conns[&c].replier(), bytes),
                Effect::Close(_) => unreachable!("checked above"),
            })
            .collect();
        self.reported
            .attached
            .fetch_add(sends.len(), Ordering::Relaxed);
        Some(Release { started, sends })
    }

    /// Standalone: the storage thread's progress, whether or not it sent a
    /// message: the replies it handed over, then what waited for it.
    pub(crate) fn on_report(&mut self, r: Report) {
        if let Some(back) = r.back {
            for rel in back {
                let n = rel.sends.len();
                self.reported.attached.fetch_sub(n, Ordering::Relaxed);
                let effects = rel
                    .sends
                    .into_iter()
                    .map(|(c, _, bytes)| Effect::Send(c, bytes))
                    .collect();
                self.release(effects, rel.started);
            }
            self.durable = self.durable.max(r.zxid);
            self.reported.backs.fetch_sub(1, Ordering::SeqCst);
        }
        self.take_report();
    }

    pub(crate) fn take_report(&mut self) {
        let sent =
            std::mem::take(&mut *self.reported.sent.lock().unwrap_or_else(|e| e.into_inner()));
        for (conn, xid, us) in sent {
            self.note_reply(conn, xid, us);
        }
        loop {
            let d = self.reported.durable.load(Ordering::SeqCst);
            self.on_durable(d.max(self.durable));
            if self.held.is_empty() {
                return;
            }
            // Ask for a message, then look again: the storage thread may
            // have published just before it saw the request.
            self.reported.waiting.store(true, Ordering::SeqCst);
            let d = self.reported.durable.load(Ordering::SeqCst);
            if self.held.front().is_none_or(|h| h.need_zxid > d) {
                return;
            }
        }
    }

    /// A reply went out `us` after its request's step began: `cons`
    /// latency and the slow-request log.
    fn note_reply(&mut self, c: ConnId, xid: i32, us: u64) {
        let ms = us / 1000;
        if let Some(l) = self.latency.get_mut(&c) {
            l.record(ms);
        } else if self.conns.contains_key(&c) {
            self.latency.entry(c).or_default().record(ms);
        }
        let limit = self.cfg.slow_request_ms;
        if ms >= limit {
            log::warn!(
                "event=slow_request conn=0x{c:x} session=0x{:x} xid={xid} latency_ms={ms} threshold_ms={limit}",
                self.server.session_of(c).unwrap_or(0)
            );
        }
    }

    /// Releases the step's effects, or holds them until the state they
    /// describe is durable (standalone) or delivered (ensemble).
    pub(crate) fn route_effects(&mut self, started: Instant) {
        let effects = self.server.take_effects();
        if effects.is_empty() {
            return;
        }
        let need = self.server.last_zxid();
        if need > self.durable && self.zab.is_none() {
            self.durable = self
                .durable
                .max(self.reported.durable.load(Ordering::SeqCst));
        }
        if need <= self.durable && self.held.is_empty() {
            self.release(effects, started);
        } else {
            self.held.push_back(Held {
                need_zxid: need,
                started,
                effects,
            });
            if self.zab.is_none() && self.held.len() == 1 {
                self.take_report();
            }
        }
    }

    pub(crate) fn on_durable(&mut self, zxid: i64) {
        self.durable = self.durable.max(zxid);
        while self
            .held
            .front()
            .is_some_and(|h| h.need_zxid <= self.durable)
        {
            let h = self.held.pop_front().expect("checked");
            self.release(h.effects, h.started);
        }
    }

    pub(crate) fn release(&mut self, effects: Vec<Effect>, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        self.metrics.record(us, effects.len() as u64);
        for e in effects {
            match e {
                Effect::Send(c, bytes) => {
                    // Replies (not watch events) count toward the latency
                    // `cons` shows per connection.
                    let xid = xid_of(bytes.head());
                    if xid != -1 {
                        self.note_reply(c, xid, us);
                    }
                    if let Some(out) = self.conns.get(&c) {
                        let max = self.cfg.connection_output_bytes_max;
                        if over_output_max(c, out.push(bytes), max) {
                            out.close();
                            self.conns.remove(&c);
                        }
                    }
                }
                Effect::Close(c) => {
                    if let Some(out) = self.conns.remove(&c) {
                        out.close();
                    }
                }
            }
        }
    }

    /// Refuses client writes while the data directory's filesystem has less
    /// than `dataDirFreeBytesMin` free, and accepts them again once it has.
    pub(crate) fn check_disk(&mut self) {
        let Some(free) = crate::disk::free_bytes(&self.cfg.data_dir) else {
            return;
        };
        let low = free < self.cfg.data_dir_free_bytes_min;
        if low != self.server.is_read_only() {
            if low {
                log::error!(
                    "{} has {free} bytes free, less than dataDirFreeBytesMin: refusing writes",
                    self.cfg.data_dir.display()
                );
            } else {
                log::warn!(
                    "{} has {free} bytes free again: accepting writes",
                    self.cfg.data_dir.display()
                );
            }
            self.server.set_read_only(low);
        }
    }

    fn handle(&mut self, msg: Msg) {
        let started = Instant::now();
        let now = self.clock.now();
        match msg {
            Msg::Connect {
                conn,
                ip,
                port,
                req,
                out,
            } => {
                if self.zab.as_ref().is_some_and(|z| !z.serving) {
                    // Between leaders: ZooKeeper refuses clients too; they
                    // try the next server in their list.
                    out.close();
                } else {
                    self.conns.insert(conn, out);
                    self.server.connect(now, conn, &ip, port, &req);
                }
            }
            Msg::Packet { conn, body } => self.server.packet(now, conn, &body),
            Msg::Closed { conn } => {
                self.conns.remove(&conn);
                self.latency.remove(&conn);
                self.server.disconnected(conn);
            }
            Msg::FourLetter { word, reply } => {
                let _ = reply.send(fourlw::answer(self, word));
            }
        }
        self.after_step(started);
    }

    /// The core loop: requests, durability reports and the expiry tick.
    /// Runs until `stop` fires or every sender is gone, then hands back the
    /// storage thread: it finishes what was queued (syncing it) once the
    /// core's sender is dropped, and must be joined before the process exits
    /// so RocksDB closes cleanly.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut durable_rx: mpsc::UnboundedReceiver<Report>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> std::thread::JoinHandle<()> {
        let mut peer_rx = self.zab.as_mut().and_then(|z| z.events.take());
        // At most 50 ms: ZAB's timers (election settle wait, heartbeats)
        // need it, and measured on this machine a core loop whose next timer
        // is a second away answers a lone request ~70 µs later than one
        // ticking every 50 ms (zkbench get, 1 connection: p50 78 µs vs 9 µs),
        // so standalone ticks as often too. A tick is cheap.
        let tick_ms = (self.cfg.tick_time_ms as u64 / 2).clamp(10, 50);
        let tick = Duration::from_millis(tick_ms);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let look = crate::evlook::start(self.cfg.event_loop_look());
        let stepped = || {
            if let Some(l) = &look {
                l.stepped()
            }
        };
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                // Before any work: under a steady stream of peer or client
                // messages the later branches are always ready, and a tick
                // starved behind them let ZAB's clock stand still and then
                // jump (a follower under load decided its busy leader had
                // been silent for syncLimit ticks).
                _ = ticker.tick() => {
                    let started = Instant::now();
                    let now = self.clock.now();
                    self.check_disk();
                    if self.zab.is_some() {
                        self.ensemble_tick();
                    } else {
                        self.take_report();
                    }
                    self.server.tick(now);
                    self.after_step(started);
                }
                // Not after a tick: an idle server would look every tick.
                Some(r) = durable_rx.recv() => {
                    if self.zab.is_some() {
                        self.drain();
                    } else {
                        self.on_report(r);
                    }
                    stepped();
                }
                Some(ev) = async {
                    match peer_rx.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.on_peer_event(ev);
                    stepped();
                }
                msg = rx.recv() => match msg {
                    Some(m) => {
                        self.handle(m);
                        // Drain what is already queued before yielding, so a
                        // burst shares one durability wait.
                        for _ in 0..256 {
                            match rx.try_recv() {
                                Ok(m) => self.handle(m),
                                Err(_) => break,
                            }
                        }
                        stepped();
                    }
                    None => break,
                },
            }
        }
        if self.zab.is_some() {
            self.send_unwritten();
        }
        let Core {
            storage,
            storage_thread,
            ..
        } = self;
        drop(storage);
        storage_thread
    }
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub fn next_conn_id() -> ConnId {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A learner's acks ride on the write that syncs what they ack: they
    /// leave once the log is written, before the ticket is reported (from
    /// then on the core sends on the same link, and must not overtake
    /// them), in the order of their jobs.
    #[test]
    fn acks_riding_on_a_write_leave_after_the_log_and_before_the_ticket() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        use zkd_zab::peer::Persist as Z;
        use zkd_zab::types::Txn;

        let dir = std::env::temp_dir().join(format!("zkd-acks-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (link, writer) = crate::ensemble::link::new();
        let _up = writer.attach(ours.as_raw_fd());
        let zxid = (1u64 << 32) + 1;
        {
            let mut store = Store::open(&dir, &dir).unwrap();
            store.load().unwrap();
            let mut group = Group::default();
            for (ticket, z, ack) in [(1, zxid, b"ack1"), (2, zxid + 1, b"ack2")] {
                group.add(Job::Ensemble {
                    tree: Vec::new(),
                    zab: vec![Z::Append(vec![Txn {
                        zxid: z,
                        data: vec![ticket as u8; 3].into(),
                    }])],
                    sync: true,
                    ticket,
                    then: Some((link.clone(), ack.to_vec())),
                });
            }
            let mut at_report = None;
            let listening = group.write(&mut store, 1000, |ticket, _, standalone| {
                let mut got = vec![0u8; 64];
                let n = theirs.read(&mut got).unwrap_or(0);
                at_report = Some((ticket, standalone, got[..n].to_vec()));
                true
            });
            assert!(listening);
            assert_eq!(at_report, Some((2, false, b"ack1ack2".to_vec())));
        }
        // What they acked is in the log.
        let mut store = Store::open(&dir, &dir).unwrap();
        let loaded = store.load().unwrap();
        let zab = store.load_zab(loaded.last_zxid).unwrap();
        let logged: Vec<u64> = zab.log.iter().map(|t| t.zxid).collect();
        assert_eq!(logged, vec![zxid, zxid + 1]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
