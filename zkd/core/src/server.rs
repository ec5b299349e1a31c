//! The standalone server's state machine: connections, sessions, the tree and
//! watches in, frames and persistence work out. It never reads a clock or
//! touches a socket or disk; the runtime feeds it `Now` and bytes and carries
//! out what `take_effects` and `take_persist` hand back.
//!
//! Contract with the runtime: after each call, the effects it produced may be
//! released only once everything in `take_persist` from that call and earlier
//! calls is durable. That one rule makes every reply and every watch event
//! describe only durable state, and keeps each connection's output in order.

mod children_cache;
mod replica;

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use zk_proto::codes::{perms, xid};
use zk_proto::jute::{Reader, Writer};
use zk_proto::records::*;
use zk_proto::{ErrorCode, EventType, KeeperState, OpCode};

use crate::acl;
use crate::out_frame::OutFrame;
use crate::prep::{self, Applied};
use crate::session::{ConnId, SessionTable};
use crate::tree::DataTree;
use crate::txn::{Txn, TxnHeader};
use crate::watch::{Kind, WatchTable};
pub use replica::{Divergence, Forward, ForwardKind, Proposal, Role};

/// Wall-clock time for stats, monotonic time for expiry, both in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    pub wall_ms: i64,
    pub mono_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server_id: i64,
    pub tick_ms: i32,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// TTL nodes (`zookeeper.extendedTypesEnabled`).
    pub extended_types: bool,
    /// How often containers and TTL nodes are checked for removal.
    pub reap_interval_ms: i64,
    /// At most this many of them are removed per minute.
    pub reap_per_minute_max: u32,
    /// `user:base64(sha1)` whose digest auth grants the `super` identity.
    pub super_digest: Option<String>,
    /// Hard quota limits refuse writes.
    pub enforce_quota: bool,
}

impl Config {
    /// ZooKeeper's defaults for everything but the timeouts.
    pub fn new(server_id: i64, tick_ms: i32) -> Config {
        Config {
            server_id,
            tick_ms,
            min_session_timeout_ms: 2 * tick_ms,
            max_session_timeout_ms: 20 * tick_ms,
            extended_types: true,
            reap_interval_ms: 60_000,
            reap_per_minute_max: 10_000,
            super_digest: None,
            enforce_quota: true,
        }
    }
}

/// Something the runtime must do on a connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send(ConnId, OutFrame),
    Close(ConnId),
}

/// Work for storage: log records and the new state of every changed node and
/// session, all of which must become durable together.
#[derive(Debug, Default)]
pub struct Persist {
    pub last_zxid: i64,
    pub log: Vec<(i64, Vec<u8>)>,
    pub nodes: Vec<(String, Option<crate::record::NodeRecord>)>,
    pub sessions: Vec<(i64, Option<Vec<u8>>)>,
}

impl Persist {
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.nodes.is_empty() && self.sessions.is_empty()
    }
}

struct Conn {
    session: i64,
    ip: String,
    port: u16,
    established_ms: i64,
    received: u64,
    sent: u64,
    last_op: &'static str,
    last_cxid: i32,
    last_zxid: i64,
    last_response_ms: i64,
}

/// One connection as the `cons` and `stat` four-letter words show it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub conn: ConnId,
    pub ip: String,
    pub port: u16,
    pub session: i64,
    pub timeout_ms: i32,
    pub established_ms: i64,
    pub received: u64,
    pub sent: u64,
    pub last_op: &'static str,
    pub last_cxid: i32,
    pub last_zxid: i64,
    pub last_response_ms: i64,
}

/// The short names the reference gives operations in `cons` (`lop=`).
fn op_name(op: i32) -> &'static str {
    match OpCode::from_i32(op) {
        Some(OpCode::Ping) => "PING",
        Some(OpCode::Create)
        | Some(OpCode::Create2)
        | Some(OpCode::CreateContainer)
        | Some(OpCode::CreateTtl) => "CREA",
        Some(OpCode::Delete) => "DELE",
        Some(OpCode::Exists) => "EXIS",
        Some(OpCode::GetData) => "GETD",
        Some(OpCode::SetData) => "SETD",
        Some(OpCode::GetAcl) => "GETA",
        Some(OpCode::SetAcl) => "SETA",
        Some(OpCode::GetChildren) | Some(OpCode::GetChildren2) => "GETC",
        Some(OpCode::Sync) => "SYNC",
        Some(OpCode::Check) => "CHEC",
        Some(OpCode::Multi) => "MULT",
        Some(OpCode::MultiRead) => "MLTR",
        Some(OpCode::SetWatches) | Some(OpCode::SetWatches2) => "SETW",
        Some(OpCode::AddWatch) => "ADDW",
        Some(OpCode::CheckWatches) => "CHKW",
        Some(OpCode::RemoveWatches) => "REMW",
        Some(OpCode::CloseSession) => "CLOS",
        Some(OpCode::Auth) => "AUTH",
        Some(OpCode::GetEphemerals) => "GETE",
        Some(OpCode::GetAllChildrenNumber) => "GETACN",
        Some(OpCode::WhoAmI) => "HOMI",
        _ => "UNKN",
    }
}

/// Counters the four-letter words report.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub packets_received: u64,
    pub packets_sent: u64,
}

pub struct Server {
    cfg: Config,
    tree: DataTree,
    /// Encoded child lists of big parents (see `children_cache`).
    children_cache: children_cache::ChildrenCache,
    sessions: SessionTable,
    watches: WatchTable,
    conns: HashMap<ConnId, Conn>,
    last_zxid: i64,
    next_session: i64,
    rng: u64,
    effects: Vec<Effect>,
    persist: Persist,
    next_reap_ms: i64,
    /// Client writes are refused (the runtime found the disk nearly full).
    read_only: bool,
    /// The time of the call being handled, for per-connection stats.
    now: Now,
    pub counters: Counters,
    /// Standalone, or this server's part in an ensemble (see `replica`).
    role: Role,
    /// Leader: txns prepared and not yet handed to ZAB.
    proposals: Vec<Proposal>,
    /// Learner: requests not yet sent to the leader.
    forwards: Vec<Forward>,
    /// Learner: forwarded requests not yet answered, by (session, cxid).
    outstanding: HashMap<(i64, i32), replica::Outstanding>,
    /// Learner: frames held back until the connection's forwarded requests
    /// are answered (see `replica::queue_if_waiting`).
    waiting: HashMap<ConnId, VecDeque<Vec<u8>>>,
    /// Learner: forwarded requests in flight per connection.
    inflight: HashMap<ConnId, usize>,
    /// Learner: new sessions waiting for their CreateSession txn.
    pending_connects: HashMap<i64, replica::PendingConnect>,
    /// Learner: `sync`s the leader answered, as (zxid to reach, session, cxid).
    syncs: Vec<(i64, i64, i32)>,
    /// Leader: its epoch's first zxid minus one; the next txn gets the
    /// larger of this and `last_zxid`, plus one.
    epoch_base: i64,
}

/// A session restored from storage.
pub struct RestoredSession {
    pub id: i64,
    pub timeout_ms: i32,
    pub passwd: [u8; 16],
}

pub fn encode_session(timeout_ms: i32, passwd: &[u8; 16]) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(timeout_ms).buffer(passwd);
    w.buf
}

pub fn decode_session(id: i64, bytes: &[u8]) -> Option<RestoredSession> {
    let mut r = Reader::new(bytes);
    let timeout_ms = r.i32().ok()?;
    let passwd: [u8; 16] = r.buffer().ok()?.try_into().ok()?;
    Some(RestoredSession {
        id,
        timeout_ms,
        passwd,
    })
}

/// Bytes before a reply's body: the frame length and `ReplyHeader`
/// (xid, zxid, err).
const REPLY_HEAD: usize = 4 + 4 + 8 + 4;

/// A writer for a big reply body (data, a list of children), written after
/// room for the frame head so the frame is built in place, not copied.
fn reply_writer(capacity: usize) -> Writer {
    let mut buf = Vec::with_capacity(REPLY_HEAD + capacity);
    buf.resize(REPLY_HEAD, 0);
    Writer { buf }
}

/// Fills in the head `reply_writer` left room for: the frame length, then
/// `ReplyHeader` (xid, zxid, err), big-endian.
fn finish_reply(w: Writer, xid: i32, zxid: i64, err: ErrorCode) -> Vec<u8> {
    let mut buf = w.buf;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf[4..8].copy_from_slice(&xid.to_be_bytes());
    buf[8..16].copy_from_slice(&zxid.to_be_bytes());
    buf[16..REPLY_HEAD].copy_from_slice(&err.0.to_be_bytes());
    buf
}

/// A read's reply body: built here, or a shared part (a big parent's
/// cached child list, a node's big data), not copied, and the stat that
/// follows it.
enum Body {
    Built(Writer),
    Shared {
        /// The part is a jute buffer, so its length goes first (getData's
        /// data; a child list carries its own count).
        buffer: bool,
        part: Bytes,
        stat: Vec<u8>,
    },
}

fn frame(xid: i32, zxid: i64, err: ErrorCode, body: Option<&[u8]>) -> Vec<u8> {
    let mut w = reply_writer(body.map_or(0, <[u8]>::len));
    if let Some(b) = body {
        w.bytes(b);
    }
    finish_reply(w, xid, zxid, err)
}

impl Server {
    /// A server over a tree loaded from storage (or a fresh one), with the
    /// sessions that were open when it stopped. Restored sessions get a full
    /// timeout from `now` to reconnect, as in the reference.
    pub fn new(
        cfg: Config,
        tree: DataTree,
        last_zxid: i64,
        sessions: Vec<RestoredSession>,
        now: Now,
        seed: u64,
    ) -> Server {
        let mut table = SessionTable::new(cfg.tick_ms as i64);
        for s in sessions {
            table.add(s.id, s.timeout_ms, s.passwd, now.mono_ms);
        }
        // The reference's session id layout: server id in the top byte, then
        // a counter started from the wall clock so ids differ across restarts.
        let base = ((now.wall_ms as u64) << 24) >> 8;
        let next_session = (base as i64) | (cfg.server_id << 56);
        let next_reap = now.mono_ms + cfg.reap_interval_ms;
        Server {
            cfg,
            tree,
            children_cache: Default::default(),
            sessions: table,
            watches: WatchTable::default(),
            conns: HashMap::new(),
            last_zxid,
            next_session,
            rng: seed | 1,
            effects: Vec::new(),
            persist: Persist::default(),
            next_reap_ms: next_reap,
            read_only: false,
            now,
            counters: Counters::default(),
            role: Role::Standalone,
            proposals: Vec::new(),
            forwards: Vec::new(),
            outstanding: HashMap::new(),
            waiting: HashMap::new(),
            inflight: HashMap::new(),
            pending_connects: HashMap::new(),
            syncs: Vec::new(),
            epoch_base: 0,
        }
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    /// The zxid of the last txn in the tree.
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// The header of the next txn prepared here: its zxid is one past the
    /// larger of `last_zxid` and the leader's epoch base.
    fn next_header(&self, now: Now, session: i64, cxid: i32) -> TxnHeader {
        TxnHeader {
            session,
            cxid,
            zxid: self.last_zxid.max(self.epoch_base) + 1,
            time: now.wall_ms,
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub fn watch_count(&self) -> usize {
        self.watches.count()
    }

    /// Refuses (or again accepts) client writes, answering them NotReadOnly.
    /// Session create/close and expiry still go through: they are small, and
    /// clients must be able to connect and read.
    pub fn set_read_only(&mut self, on: bool) {
        self.read_only = on;
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Every open connection, by id.
    pub fn connections(&self) -> Vec<ConnInfo> {
        let mut v: Vec<ConnInfo> = self
            .conns
            .iter()
            .map(|(id, c)| ConnInfo {
                conn: *id,
                ip: c.ip.clone(),
                port: c.port,
                session: c.session,
                timeout_ms: self
                    .sessions
                    .get(c.session)
                    .map(|s| s.timeout_ms)
                    .unwrap_or(0),
                established_ms: c.established_ms,
                received: c.received,
                sent: c.sent,
                last_op: c.last_op,
                last_cxid: c.last_cxid,
                last_zxid: c.last_zxid,
                last_response_ms: c.last_response_ms,
            })
            .collect();
        v.sort_by_key(|c| c.conn);
        v
    }

    /// Sessions with their timeouts, by id.
    pub fn sessions(&self) -> Vec<(i64, i32)> {
        let mut v: Vec<(i64, i32)> = self.sessions.iter().map(|s| (s.id, s.timeout_ms)).collect();
        v.sort();
        v
    }

    pub fn watches(&self) -> &WatchTable {
        &self.watches
    }

    pub fn session_of(&self, conn: ConnId) -> Option<i64> {
        self.conns.get(&conn).map(|c| c.session)
    }

    /// The effects so far, left in place.
    pub fn peek_effects(&self) -> &[Effect] {
        &self.effects
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn take_persist(&mut self) -> Persist {
        let mut p = std::mem::take(&mut self.persist);
        p.last_zxid = self.last_zxid;
        p
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: passwords only need to be unguessable to other clients,
        // and the seed comes from the OS at start-up.
        self.rng = self.rng.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn send(&mut self, conn: ConnId, frame: impl Into<OutFrame>) {
        self.counters.packets_sent += 1;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.sent += 1;
        }
        self.effects.push(Effect::Send(conn, frame.into()));
    }

    fn close(&mut self, conn: ConnId) {
        self.effects.push(Effect::Close(conn));
    }

    fn rules(&self) -> prep::Rules {
        prep::Rules {
            extended_types: self.cfg.extended_types,
            enforce_quota: self.cfg.enforce_quota,
        }
    }

    fn ids(&self, conn: ConnId) -> Vec<Id> {
        // Authenticated identities first, then the address: the order
        // whoAmI reports them in, as the reference does.
        let mut v = Vec::new();
        if let Some(c) = self.conns.get(&conn) {
            if let Some(s) = self.sessions.get(c.session) {
                v.extend(s.auth.iter().cloned());
            }
            v.push(Id {
                scheme: "ip".into(),
                id: c.ip.clone(),
            });
        }
        v
    }

    // ---- connection lifecycle ------------------------------------------

    /// A new connection's handshake.
    pub fn connect(
        &mut self,
        now: Now,
        conn: ConnId,
        peer_ip: &str,
        peer_port: u16,
        req: &ConnectRequest,
    ) {
        self.now = now;
        self.counters.packets_received += 1;
        if req.last_zxid_seen > self.last_zxid {
            // The client has seen a newer state than ours: refuse, as the
            // reference does, so it tries a server that is caught up.
            log::warn!(
                "refusing session: client has seen zxid 0x{:x}, ours is 0x{:x}",
                req.last_zxid_seen,
                self.last_zxid
            );
            self.close(conn);
            return;
        }
        let timeout = req.timeout_ms.clamp(
            self.cfg.min_session_timeout_ms,
            self.cfg.max_session_timeout_ms,
        );
        let read_only = req.read_only.map(|_| false);
        if req.session_id == 0 {
            let id = self.next_session;
            self.next_session += 1;
            let mut passwd = [0u8; 16];
            passwd[..8].copy_from_slice(&self.next_random().to_be_bytes());
            passwd[8..].copy_from_slice(&self.next_random().to_be_bytes());
            let rsp = ConnectResponse {
                protocol_version: 0,
                timeout_ms: timeout,
                session_id: id,
                passwd: passwd.to_vec(),
                read_only,
            };
            if self.role == Role::Learner {
                self.forward_connect(conn, peer_ip, peer_port, rsp);
                return;
            }
            let txn = Txn::CreateSession {
                timeout_ms: timeout,
                passwd,
            };
            self.commit_txn(now, id, 0, txn);
            self.attach(now, conn, peer_ip, peer_port, id);
            self.send_connect_response(conn, &rsp);
            log::debug!("session 0x{id:x} created, timeout {timeout} ms");
            return;
        }
        let valid = self
            .sessions
            .get(req.session_id)
            .is_some_and(|s| !s.closing && s.passwd[..] == req.passwd[..]);
        if !valid {
            let rsp = ConnectResponse {
                protocol_version: 0,
                timeout_ms: 0,
                session_id: 0,
                passwd: vec![0; 16],
                read_only,
            };
            self.send_connect_response(conn, &rsp);
            self.close(conn);
            return;
        }
        let id = req.session_id;
        if let Some(old) = self.sessions.get(id).and_then(|s| s.conn) {
            if old != conn {
                self.detach(old);
                self.close(old);
            }
        }
        self.sessions.set_timeout(id, timeout, now.mono_ms);
        self.attach(now, conn, peer_ip, peer_port, id);
        let passwd = self
            .sessions
            .get(id)
            .map(|s| s.passwd.to_vec())
            .unwrap_or_default();
        let rsp = ConnectResponse {
            protocol_version: 0,
            timeout_ms: timeout,
            session_id: id,
            passwd,
            read_only,
        };
        self.send_connect_response(conn, &rsp);
    }

    fn send_connect_response(&mut self, conn: ConnId, rsp: &ConnectResponse) {
        let mut w = Writer::framed();
        rsp.write(&mut w);
        self.send(conn, w.finish_frame());
    }

    fn attach(&mut self, now: Now, conn: ConnId, ip: &str, port: u16, session: i64) {
        let conn_state = Conn {
            session,
            ip: ip.to_owned(),
            port,
            established_ms: now.wall_ms,
            received: 1,
            sent: 0,
            last_op: "NA",
            last_cxid: 0,
            last_zxid: self.last_zxid,
            last_response_ms: now.wall_ms,
        };
        self.conns.insert(conn, conn_state);
        if let Some(s) = self.sessions.get_mut(session) {
            s.conn = Some(conn);
        }
        self.sessions.touch(session, now.mono_ms);
    }

    fn detach(&mut self, conn: ConnId) {
        self.watches.remove_conn(conn);
        self.waiting.remove(&conn);
        self.inflight.remove(&conn);
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(s) = self.sessions.get_mut(c.session) {
                if s.conn == Some(conn) {
                    s.conn = None;
                }
            }
        }
    }

    /// The connection is gone (peer closed, or the runtime closed it). The
    /// session lives on until it expires or a client reattaches to it.
    pub fn disconnected(&mut self, conn: ConnId) {
        self.detach(conn);
    }

    /// Expires sessions whose deadline has passed, and every
    /// `reap_interval_ms` removes empty containers and expired TTL nodes.
    pub fn tick(&mut self, now: Now) {
        self.now = now;
        if self.role == Role::Learner {
            // The leader reaps and expires; learners apply its txns.
            return;
        }
        if now.mono_ms >= self.next_reap_ms {
            self.next_reap_ms = now.mono_ms + self.cfg.reap_interval_ms;
            let cap =
                ((self.cfg.reap_per_minute_max as i64 * self.cfg.reap_interval_ms) / 60_000).max(1);
            for p in self
                .tree
                .reap_candidates(now.wall_ms)
                .into_iter()
                .take(cap as usize)
            {
                let hdr = self.next_header(now, 0, 0);
                self.tree.begin();
                self.tree.delete(&p, hdr.zxid);
                let changes = self.tree.commit();
                log::debug!("removed {p} (empty container or expired TTL node)");
                self.record(hdr, Txn::Delete { path: p }, changes);
            }
        }
        for id in self.sessions.expired(now.mono_ms) {
            log::info!(
                "event=session_expired session=0x{id:x} timeout_ms={} ephemerals={}",
                self.sessions.get(id).map(|s| s.timeout_ms).unwrap_or(0),
                self.tree.ephemerals_of(id).len()
            );
            if let Some(s) = self.sessions.get_mut(id) {
                s.closing = true;
            }
            let conn = self.sessions.get(id).and_then(|s| s.conn);
            self.commit_txn(now, id, 0, Txn::CloseSession);
            if let Some(c) = conn {
                self.detach(c);
                self.close(c);
            }
        }
    }

    // ---- requests --------------------------------------------------------

    /// One frame from an established connection.
    pub fn packet(&mut self, now: Now, conn: ConnId, body: &[u8]) {
        self.now = now;
        if self.role == Role::Learner && self.queue_if_waiting(conn, body) {
            return;
        }
        self.run_packet(now, conn, body);
    }

    fn run_packet(&mut self, now: Now, conn: ConnId, body: &[u8]) {
        self.counters.packets_received += 1;
        let Some(session) = self.conns.get(&conn).map(|c| c.session) else {
            self.close(conn);
            return;
        };
        let mut r = Reader::new(body);
        let Ok(hdr) = RequestHeader::read(&mut r) else {
            log::info!("closing connection {conn}: request header does not decode");
            self.close(conn);
            return;
        };
        self.sessions.touch(session, now.mono_ms);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.received += 1;
            c.last_op = op_name(hdr.op);
            if hdr.xid >= 0 {
                c.last_cxid = hdr.xid;
            }
        }
        let body = r.rest();
        let Some(op) = OpCode::from_i32(hdr.op) else {
            self.reply(conn, hdr.xid, ErrorCode::UNIMPLEMENTED, None);
            return;
        };
        let result = match op {
            OpCode::Ping => {
                let z = self.last_zxid;
                self.send(conn, frame(xid::PING, z, ErrorCode::OK, None));
                return;
            }
            OpCode::Auth => return self.auth(conn, session, body),
            OpCode::SetWatches => return self.set_watches(conn, hdr.xid, body, false),
            OpCode::SetWatches2 => return self.set_watches(conn, hdr.xid, body, true),
            OpCode::AddWatch => self.add_watch(conn, body),
            OpCode::CheckWatches => self.check_watches(conn, body, false),
            OpCode::RemoveWatches => self.check_watches(conn, body, true),
            OpCode::WhoAmI => Ok(self.who_am_i(conn)),
            OpCode::Sasl => {
                // No SASL mechanism is configured: the reference answers with
                // a null token and zxid 0.
                let mut w = Writer::new();
                w.null();
                self.send(conn, frame(hdr.xid, 0, ErrorCode::OK, Some(&w.buf)));
                return;
            }
            OpCode::CloseSession if self.role == Role::Learner => {
                let kind = ForwardKind::CloseSession;
                return self.forward(conn, session, hdr.xid, kind, None);
            }
            OpCode::Sync if self.role == Role::Learner => {
                let Ok(r) = PathRequest::decode(body) else {
                    self.reply(conn, hdr.xid, ErrorCode::MARSHALLING_ERROR, None);
                    return;
                };
                let echo = Some(r.encode());
                return self.forward(conn, session, hdr.xid, ForwardKind::Sync, echo);
            }
            OpCode::CloseSession => {
                if let Some(s) = self.sessions.get_mut(session) {
                    s.closing = true;
                }
                self.commit_txn(now, session, hdr.xid, Txn::CloseSession);
                let z = self.last_zxid;
                self.send(conn, frame(hdr.xid, z, ErrorCode::OK, None));
                self.detach(conn);
                self.close(conn);
                return;
            }
            OpCode::Exists => self.exists(conn, body),
            OpCode::GetData => {
                let r = self.get_data(conn, body);
                return self.reply_body(conn, hdr.xid, r);
            }
            OpCode::GetChildren | OpCode::GetChildren2 => {
                let r = self.get_children(conn, body, op == OpCode::GetChildren2);
                return self.reply_body(conn, hdr.xid, r);
            }
            OpCode::GetAcl => self.get_acl(conn, body),
            OpCode::Sync => PathRequest::decode(body)
                .map_err(|_| ErrorCode::MARSHALLING_ERROR)
                .map(|r| r.encode()),
            OpCode::GetEphemerals => self.get_ephemerals(session, body),
            OpCode::GetAllChildrenNumber => self.all_children_number(conn, body),
            op if op.is_write() => {
                if self.read_only {
                    // The disk is (nearly) full: answer as a read-only
                    // server would, and take no zxid.
                    self.reply(conn, hdr.xid, ErrorCode::NOT_READ_ONLY, None);
                    return;
                }
                if self.role == Role::Learner {
                    let kind = ForwardKind::Op {
                        op: hdr.op,
                        body: body.to_vec(),
                        ids: self.ids(conn),
                    };
                    return self.forward(conn, session, hdr.xid, kind, None);
                }
                return self.write(now, conn, session, hdr.xid, op, body);
            }
            OpCode::MultiRead => self.multi_read(conn, body),
            _ => Err(ErrorCode::UNIMPLEMENTED),
        };
        match result {
            Ok(b) => self.reply(conn, hdr.xid, ErrorCode::OK, Some(&b)),
            Err(e) => self.reply(conn, hdr.xid, e, None),
        }
    }

    fn reply(&mut self, conn: ConnId, xid: i32, err: ErrorCode, body: Option<&[u8]>) {
        let z = self.replied(conn);
        self.send(conn, frame(xid, z, err, body));
    }

    /// `reply` for a body built by `reply_writer`.
    fn reply_built(&mut self, conn: ConnId, xid: i32, body: Result<Writer, ErrorCode>) {
        match body {
            Ok(w) => {
                let z = self.replied(conn);
                self.send(conn, finish_reply(w, xid, z, ErrorCode::OK));
            }
            Err(e) => self.reply(conn, xid, e, None),
        }
    }

    /// `reply_built` for a `Body`: a shared part goes out between a head
    /// and the stat of its own frame.
    fn reply_body(&mut self, conn: ConnId, xid: i32, body: Result<Body, ErrorCode>) {
        let (buffer, part, stat) = match body {
            Ok(Body::Shared { buffer, part, stat }) => (buffer, part, stat),
            Ok(Body::Built(w)) => return self.reply_built(conn, xid, Ok(w)),
            Err(e) => return self.reply_built(conn, xid, Err(e)),
        };
        let z = self.replied(conn);
        let mut w = reply_writer(4);
        if buffer {
            w.i32(part.len() as i32);
        }
        let mut head = finish_reply(w, xid, z, ErrorCode::OK);
        let len = (head.len() - 4 + part.len() + stat.len()) as i32;
        head[..4].copy_from_slice(&len.to_be_bytes());
        self.send(
            conn,
            OutFrame::Shared {
                head,
                body: part,
                tail: stat,
            },
        );
    }

    /// Notes a reply to `conn` (for `cons`); the zxid it carries.
    fn replied(&mut self, conn: ConnId) -> i64 {
        let z = self.last_zxid;
        let t = self.now.wall_ms;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_zxid = z;
            c.last_response_ms = t;
        }
        z
    }

    fn auth(&mut self, conn: ConnId, session: i64, body: &[u8]) {
        let pkt = AuthPacket::decode(body).ok();
        let id = pkt.as_ref().and_then(|p| match p.scheme.as_str() {
            "digest" => std::str::from_utf8(&p.auth)
                .ok()
                .and_then(acl::digest_id)
                .map(|id| Id {
                    scheme: "digest".into(),
                    id,
                }),
            _ => None,
        });
        match id {
            Some(id) => {
                let is_super = self.cfg.super_digest.as_deref() == Some(id.id.as_str());
                if let Some(s) = self.sessions.get_mut(session) {
                    if is_super && !s.auth.iter().any(|i| i.scheme == "super") {
                        s.auth.push(Id {
                            scheme: "super".into(),
                            id: String::new(),
                        });
                    }
                    if !s.auth.contains(&id) {
                        s.auth.push(id);
                    }
                }
                self.reply(conn, xid::AUTH, ErrorCode::OK, None);
            }
            None => {
                // The reference answers AuthFailed and closes the connection.
                self.reply(conn, xid::AUTH, ErrorCode::AUTH_FAILED, None);
                self.detach(conn);
                self.close(conn);
            }
        }
    }

    fn set_watches(&mut self, conn: ConnId, x: i32, body: &[u8], v2: bool) {
        let decoded = if v2 {
            SetWatches2::decode(body).ok()
        } else {
            SetWatches::decode(body).ok().map(|s| SetWatches2 {
                relative_zxid: s.relative_zxid,
                data_watches: s.data_watches,
                exist_watches: s.exist_watches,
                child_watches: s.child_watches,
                ..Default::default()
            })
        };
        let Some(sw) = decoded else {
            self.close(conn);
            return;
        };
        for p in &sw.persistent_watches {
            self.watches.add(Kind::Persistent, p, conn);
        }
        for p in &sw.persistent_recursive_watches {
            self.watches.add(Kind::Recursive, p, conn);
        }
        let rel = sw.relative_zxid;
        let mut events = Vec::new();
        for p in &sw.data_watches {
            match self.tree.get(p) {
                None => events.push((EventType::NodeDeleted, p.clone())),
                Some(n) if n.stat.mzxid > rel => {
                    events.push((EventType::NodeDataChanged, p.clone()))
                }
                Some(_) => self.watches.add(Kind::Data, p, conn),
            }
        }
        for p in &sw.exist_watches {
            match self.tree.get(p) {
                Some(_) => events.push((EventType::NodeCreated, p.clone())),
                None => self.watches.add(Kind::Data, p, conn),
            }
        }
        for p in &sw.child_watches {
            match self.tree.get(p) {
                None => events.push((EventType::NodeDeleted, p.clone())),
                Some(n) if n.stat.pzxid > rel => {
                    events.push((EventType::NodeChildrenChanged, p.clone()))
                }
                Some(_) => self.watches.add(Kind::Child, p, conn),
            }
        }
        let z = self.last_zxid;
        for (t, p) in events {
            self.notify(conn, t, &p, z);
        }
        self.reply(conn, x, ErrorCode::OK, None);
    }

    fn notify(&mut self, conn: ConnId, t: EventType, path: &str, zxid: i64) {
        let ev = WatcherEvent {
            typ: t as i32,
            state: KeeperState::SyncConnected as i32,
            path: path.to_owned(),
        };
        // 3.9 puts the triggering zxid in the header (3.8 sent -1).
        self.send(
            conn,
            frame(xid::NOTIFICATION, zxid, ErrorCode::OK, Some(&ev.encode())),
        );
    }

    fn add_watch(&mut self, conn: ConnId, body: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        let mut r = Reader::new(body);
        let (path, mode) = (|| Ok::<_, zk_proto::DecodeError>((r.ustring()?, r.i32()?)))()
            .map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        let kind = match mode {
            0 => Kind::Persistent,
            1 => Kind::Recursive,
            _ => return Err(ErrorCode::MARSHALLING_ERROR),
        };
        self.watches.add(kind, &path, conn);
        // The reply carries an ErrorResponse record with code 0.
        Ok(ErrorResponse { err: 0 }.encode())
    }

    fn check_watches(
        &mut self,
        conn: ConnId,
        body: &[u8],
        remove: bool,
    ) -> Result<Vec<u8>, ErrorCode> {
        let mut r = Reader::new(body);
        let (path, typ) = (|| Ok::<_, zk_proto::DecodeError>((r.ustring()?, r.i32()?)))()
            .map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        let kinds = crate::watch::kinds_of_watcher_type(typ).ok_or(ErrorCode::MARSHALLING_ERROR)?;
        let mut found = false;
        for &k in kinds {
            if remove {
                found |= self.watches.remove(k, &path, conn);
            } else {
                found |= self.watches.has(k, &path, conn);
            }
        }
        if found {
            Ok(Vec::new())
        } else {
            Err(ErrorCode::NO_WATCHER)
        }
    }

    /// `whoAmI`: the connection's identities as (scheme, user) pairs; for a
    /// digest identity the user is the part before the colon.
    fn who_am_i(&self, conn: ConnId) -> Vec<u8> {
        let ids = self.ids(conn);
        let mut w = Writer::new();
        w.i32(ids.len() as i32);
        for id in ids {
            let user = match id.scheme.as_str() {
                "digest" => id.id.split(':').next().unwrap_or("").to_owned(),
                _ => id.id.clone(),
            };
            w.ustring(&id.scheme).ustring(&user);
        }
        w.buf
    }

    // ---- reads -------------------------------------------------------------

    fn read_path_watch(body: &[u8]) -> Result<PathWatch, ErrorCode> {
        PathWatch::decode(body).map_err(|_| ErrorCode::MARSHALLING_ERROR)
    }

    fn check_acl(&self, conn: ConnId, path: &str, perm: i32) -> Result<(), ErrorCode> {
        let n = self.tree.get(path).ok_or(ErrorCode::NO_NODE)?;
        if acl::allows(&n.acl, perm, &self.ids(conn)) {
            Ok(())
        } else {
            Err(ErrorCode::NO_AUTH)
        }
    }

    fn exists(&mut self, conn: ConnId, body: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        let r = Self::read_path_watch(body)?;
        // Of the reads, only exists refuses a NUL (the others answer NoNode).
        if r.path.contains('\0') {
            return Err(ErrorCode::BAD_ARGUMENTS);
        }
        if r.watch {
            self.watches.add(Kind::Data, &r.path, conn);
        }
        let n = self.tree.get(&r.path).ok_or(ErrorCode::NO_NODE)?;
        Ok(StatResponse { stat: n.stat() }.encode())
    }

    fn get_data(&mut self, conn: ConnId, body: &[u8]) -> Result<Body, ErrorCode> {
        let r = Self::read_path_watch(body)?;
        self.check_acl(conn, &r.path, perms::READ)?;
        if r.watch {
            self.watches.add(Kind::Data, &r.path, conn);
        }
        let n = self.tree.get(&r.path).ok_or(ErrorCode::NO_NODE)?;
        if let Some(data) = n.data.shared() {
            let mut stat = Writer {
                buf: Vec::with_capacity(68),
            };
            n.stat().write(&mut stat);
            return Ok(Body::Shared {
                buffer: true,
                part: data,
                stat: stat.buf,
            });
        }
        // Data, its length and the stat (68 bytes).
        let mut w = reply_writer(n.data.len() + 4 + 68);
        w.buffer(&n.data);
        n.stat().write(&mut w);
        Ok(Body::Built(w))
    }

    fn get_children(
        &mut self,
        conn: ConnId,
        body: &[u8],
        with_stat: bool,
    ) -> Result<Body, ErrorCode> {
        let r = Self::read_path_watch(body)?;
        self.check_acl(conn, &r.path, perms::READ)?;
        if r.watch {
            self.watches.add(Kind::Child, &r.path, conn);
        }
        let n = self.tree.get(&r.path).ok_or(ErrorCode::NO_NODE)?;
        let stat = |w: &mut Writer| {
            if with_stat {
                n.stat().write(w);
            }
        };
        let names = |tree: &DataTree, w: &mut Writer| {
            w.i32(n.child_count as i32);
            for c in tree.children_of(&r.path, n.child_count) {
                w.ustring(c);
            }
        };
        if n.child_count < children_cache::MIN_CHILDREN {
            // A guess at the names' length (a length and ~12 bytes each).
            let mut w = reply_writer(4 + n.child_count as usize * 16 + 68);
            names(&self.tree, &mut w);
            stat(&mut w);
            return Ok(Body::Built(w));
        }
        let version = children_cache::Version {
            czxid: n.stat.czxid,
            pzxid: n.stat.pzxid,
            cversion: n.stat.cversion,
            count: n.child_count,
        };
        let list = match self.children_cache.get(&r.path, version) {
            Some(list) => list,
            None => {
                let mut w = Writer {
                    buf: Vec::with_capacity(4 + n.child_count as usize * 16),
                };
                names(&self.tree, &mut w);
                let list = Bytes::from(w.buf);
                self.children_cache.put(&r.path, version, list.clone());
                list
            }
        };
        let mut tail = Writer { buf: Vec::new() };
        stat(&mut tail);
        Ok(Body::Shared {
            buffer: false,
            part: list,
            stat: tail.buf,
        })
    }

    fn get_acl(&mut self, conn: ConnId, body: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        let r = PathRequest::decode(body).map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        self.check_acl(conn, &r.path, perms::READ | perms::ADMIN)?;
        let n = self.tree.get(&r.path).ok_or(ErrorCode::NO_NODE)?;
        Ok(GetAclResponse {
            acl: n.acl.as_ref().clone(),
            stat: n.stat(),
        }
        .encode())
    }

    fn get_ephemerals(&mut self, session: i64, body: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        let r = PathRequest::decode(body).map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        let list: Vec<String> = self
            .tree
            .ephemerals_of(session)
            .into_iter()
            .filter(|p| r.path == "/" || p.starts_with(&r.path))
            .collect();
        let mut w = Writer::new();
        w.strings(&list);
        Ok(w.buf)
    }

    fn all_children_number(&mut self, conn: ConnId, body: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        let r = PathRequest::decode(body).map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        self.check_acl(conn, &r.path, perms::READ)?;
        let mut count = 0i32;
        let mut stack = vec![r.path.clone()];
        while let Some(p) = stack.pop() {
            for c in self.tree.children(&p) {
                count += 1;
                stack.push(crate::path::join(&p, c));
            }
        }
        let mut w = Writer::new();
        w.i32(count);
        Ok(w.buf)
    }

    fn multi_read(&mut self, conn: ConnId, body: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        let req = MultiRequest::decode(body).map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        let mut results = Vec::new();
        for op in &req.ops {
            let res = match op {
                MultiOp::GetChildren(p) => self
                    .check_acl(conn, &p.path, perms::READ)
                    .map(|_| self.tree.children(&p.path).map(|c| c.to_string()).collect())
                    .map(MultiResult::GetChildren),
                MultiOp::GetData(p) => self.check_acl(conn, &p.path, perms::READ).map(|_| {
                    let n = self.tree.get(&p.path).expect("checked by check_acl");
                    MultiResult::GetData(n.data.to_vec(), n.stat())
                }),
                _ => return Err(ErrorCode::BAD_ARGUMENTS),
            };
            results.push(res.unwrap_or_else(|e| MultiResult::Error(e.0)));
        }
        Ok(MultiResponse { results }.encode())
    }

    // ---- writes ------------------------------------------------------------

    fn write(&mut self, now: Now, conn: ConnId, session: i64, x: i32, op: OpCode, body: &[u8]) {
        let ids = self.ids(conn);
        match self.prepare(now, session, x, &ids, op, body) {
            None => self.reply(conn, x, ErrorCode::MARSHALLING_ERROR, None),
            Some(Ok(applied)) => {
                let body = applied.encode();
                self.reply(conn, x, ErrorCode::OK, body.as_deref());
            }
            Some(Err(e)) => self.reply(conn, x, e, None),
        }
    }

    /// Prepares and records one write (a failed one as an error txn, as
    /// the reference does). `None`: the body did not decode, nothing was
    /// recorded.
    fn prepare(
        &mut self,
        now: Now,
        session: i64,
        cxid: i32,
        ids: &[Id],
        op: OpCode,
        body: &[u8],
    ) -> Option<Result<Applied, ErrorCode>> {
        let hdr = self.next_header(now, session, cxid);
        self.tree.begin();
        let rules = self.rules();
        let (txn, result) = match prep::execute(&mut self.tree, &hdr, ids, rules, op, body) {
            Err(ErrorCode::MARSHALLING_ERROR) => {
                self.tree.rollback();
                return None;
            }
            Err(e) => {
                self.tree.rollback();
                (Txn::Error(e.0), Err(e))
            }
            Ok((txn, applied)) => (txn, Ok(applied)),
        };
        let changes = self.tree.commit();
        self.record(hdr, txn, changes);
        Some(result)
    }

    /// Applies a txn that needs no preparation (session create/close) and
    /// records it.
    fn commit_txn(&mut self, now: Now, session: i64, cxid: i32, txn: Txn) {
        let hdr = self.next_header(now, session, cxid);
        self.tree.begin();
        match &txn {
            Txn::CreateSession { timeout_ms, passwd } => {
                self.sessions
                    .add(session, *timeout_ms, *passwd, now.mono_ms);
                self.persist
                    .sessions
                    .push((session, Some(encode_session(*timeout_ms, passwd))));
            }
            Txn::CloseSession => {
                for p in self.tree.ephemerals_of(session) {
                    self.tree.delete(&p, hdr.zxid);
                }
                self.sessions.remove(session);
                self.persist.sessions.push((session, None));
            }
            _ => unreachable!("commit_txn takes session txns only"),
        }
        let changes = self.tree.commit();
        self.record(hdr, txn, changes);
    }

    /// Logs a committed txn, queues its node changes for storage and fires
    /// the watches it triggers (before any reply the caller sends next).
    fn record(&mut self, hdr: TxnHeader, txn: Txn, changes: crate::tree::Changes) {
        self.last_zxid = hdr.zxid;
        match self.role {
            // In an ensemble the log is ZAB's.
            Role::Standalone => self
                .persist
                .log
                .push((hdr.zxid, Txn::encode_entry(&hdr, &txn))),
            Role::Leader => self.proposals.push(Proposal {
                hdr,
                txn,
                origin: self.cfg.server_id as u64,
                err: 0,
                reply: None,
                digest: Some(self.tree.digest()),
            }),
            Role::Learner => {}
        }
        self.persist.nodes.extend(changes.records);
        for ev in changes.events {
            // Most nodes are world-readable: decide that once per event, not
            // once per watcher (building each connection's identities).
            let world_readable = acl::allows(&ev.acl, perms::READ, &[]);
            for c in self.watches.trigger(ev.typ, &ev.path) {
                // Watch delivery is filtered by READ on the node, as in the
                // reference (CVE-2024-23944): a watch must not reveal what
                // a read would refuse.
                if world_readable || acl::allows(&ev.acl, perms::READ, &self.ids(c)) {
                    self.notify(c, ev.typ, &ev.path, hdr.zxid);
                }
            }
        }
    }
}

impl Applied {
    fn encode(&self) -> Option<Vec<u8>> {
        match self {
            Applied::Create(p) => Some(CreateResponse { path: p.clone() }.encode()),
            Applied::Create2(p, s) => Some(
                Create2Response {
                    path: p.clone(),
                    stat: s.clone(),
                }
                .encode(),
            ),
            Applied::Stat(s) => Some(StatResponse { stat: s.clone() }.encode()),
            Applied::None => None,
            Applied::Multi(results) => Some(
                MultiResponse {
                    results: results.clone(),
                }
                .encode(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies are built in place (`reply_writer`, `finish_reply`): the
    /// result must be exactly the frame of a `ReplyHeader` and the body.
    #[test]
    fn a_reply_frame_is_its_length_header_and_body() {
        for body in [None, Some(&b""[..]), Some(&b"xy"[..])] {
            let mut w = Writer::framed();
            ReplyHeader {
                xid: 7,
                zxid: 0x1_0000_0009,
                err: -101,
            }
            .write(&mut w);
            if let Some(b) = body {
                w.bytes(b);
            }
            assert_eq!(
                frame(7, 0x1_0000_0009, ErrorCode(-101), body),
                w.finish_frame()
            );
        }
    }
}
