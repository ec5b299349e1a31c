//! The server in an ensemble. ZAB (crate `zkd-zab`) orders opaque txns; this
//! is what zkd puts in them and how each role uses the same `Server`:
//!
//! - Leader: prepares every write as standalone does (its own clients' and
//!   those learners forward), applying it to its tree at once so later
//!   requests see it, and hands each txn to ZAB as a `Proposal`. Its replies
//!   wait (in the runtime) until ZAB delivers the txn, i.e. a quorum logged
//!   it. If it stops leading before that, the runtime reloads the tree from
//!   disk, which holds delivered txns only.
//! - Learner (follower or observer): answers reads from its tree, forwards
//!   writes, session creation/closing and `sync` to the leader, and holds the
//!   connection's later requests until the answer comes back, so a client
//!   sees its replies in order. Delivered proposals are applied with
//!   `apply::apply_tree`; the learner that forwarded one answers its client
//!   with the reply the leader computed.
//! - Sessions are replicated txns; only the leader expires them, and
//!   learners tell it which sessions are alive on them (`touch`).
//! - Every proposal carries the leader's tree digest after it; a replica
//!   whose digest differs after applying it has diverged and must stop.

use zk_proto::jute::{Reader, Result as JResult, Writer};
use zk_proto::records::{ConnectResponse, Id};
use zk_proto::{ErrorCode, OpCode};

use super::{encode_session, Now, Server};
use crate::session::ConnId;
use crate::txn::{Txn, TxnHeader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Leader,
    Learner,
}

/// A client request a learner hands to the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub origin: u64,
    pub session: i64,
    pub cxid: i32,
    pub kind: ForwardKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardKind {
    /// A write, with the identities of the connection that sent it.
    Op {
        op: i32,
        body: Vec<u8>,
        ids: Vec<Id>,
    },
    CreateSession {
        timeout_ms: i32,
        passwd: [u8; 16],
    },
    CloseSession,
    /// `sync`: the leader answers with the zxid to wait for.
    Sync,
}

/// A txn as ZAB carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub hdr: TxnHeader,
    pub txn: Txn,
    /// The server whose client sent the request (it answers the client).
    pub origin: u64,
    pub err: i32,
    pub reply: Option<Vec<u8>>,
    /// The leader's tree digest after this txn; `None` when it was
    /// computed with another scheme than ours (`digest::DIGEST_SCHEME`), by
    /// an earlier zkd: not comparable, so not checked.
    pub digest: Option<u64>,
}

/// The scheme of a proposal's digest rides in the top byte of its origin
/// (server ids are below 2^56); an earlier zkd wrote 0 there.
const ORIGIN_BITS: u32 = 56;

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        let reply = self.reply.as_ref().map_or(0, |r| r.len());
        let mut w = Writer::with_capacity(24 + reply + self.txn.len_hint());
        let scheme = match self.digest {
            Some(_) => crate::digest::DIGEST_SCHEME as u64,
            None => 0,
        };
        w.i64((self.origin | scheme << ORIGIN_BITS) as i64)
            .i64(self.digest.unwrap_or(0) as i64)
            .i32(self.err);
        match &self.reply {
            Some(b) => w.buffer(b),
            None => w.null(),
        };
        Txn::write_entry(&self.hdr, &self.txn, &mut w);
        w.buf
    }

    pub fn decode(b: &[u8]) -> JResult<Proposal> {
        let mut r = Reader::new(b);
        let tagged = r.i64()? as u64;
        let origin = tagged & ((1 << ORIGIN_BITS) - 1);
        let scheme = (tagged >> ORIGIN_BITS) as u8;
        let digest = Some(r.i64()? as u64).filter(|_| scheme == crate::digest::DIGEST_SCHEME);
        let err = r.i32()?;
        let reply = r.buffer_opt()?.map(|b| b.to_vec());
        let (hdr, txn) = Txn::decode_entry(r.rest())?;
        Ok(Proposal {
            hdr,
            txn,
            origin,
            err,
            reply,
            digest,
        })
    }
}

impl Forward {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.buf
    }

    /// `encode`, appended to `w`.
    pub fn write(&self, w: &mut Writer) {
        w.i64(self.origin as i64).i64(self.session).i32(self.cxid);
        match &self.kind {
            ForwardKind::Op { op, body, ids } => {
                w.i32(0).i32(*op).buffer(body).i32(ids.len() as i32);
                for id in ids {
                    w.ustring(&id.scheme).ustring(&id.id);
                }
            }
            ForwardKind::CreateSession { timeout_ms, passwd } => {
                w.i32(1).i32(*timeout_ms).buffer(passwd);
            }
            ForwardKind::CloseSession => {
                w.i32(2);
            }
            ForwardKind::Sync => {
                w.i32(3);
            }
        }
    }

    /// About how many bytes `encode` gives.
    pub fn len_hint(&self) -> usize {
        match &self.kind {
            ForwardKind::Op { body, ids, .. } => 40 + body.len() + ids.len() * 32,
            _ => 64,
        }
    }

    pub fn decode(b: &[u8]) -> JResult<Forward> {
        let mut r = Reader::new(b);
        let origin = r.i64()? as u64;
        let session = r.i64()?;
        let cxid = r.i32()?;
        let kind = match r.i32()? {
            0 => {
                let op = r.i32()?;
                let body = r.buffer()?;
                let ids = r.vec(8, |r| {
                    Ok(Id {
                        scheme: r.ustring()?,
                        id: r.ustring()?,
                    })
                })?;
                ForwardKind::Op { op, body, ids }
            }
            1 => {
                let timeout_ms = r.i32()?;
                let passwd: [u8; 16] = r
                    .buffer()?
                    .try_into()
                    .map_err(|_| zk_proto::DecodeError::BadValue("password length", 0))?;
                ForwardKind::CreateSession { timeout_ms, passwd }
            }
            2 => ForwardKind::CloseSession,
            3 => ForwardKind::Sync,
            k => return Err(zk_proto::DecodeError::BadValue("forward kind", k as i64)),
        };
        Ok(Forward {
            origin,
            session,
            cxid,
            kind,
        })
    }
}

/// A learner's request waiting for the leader.
pub(super) struct Outstanding {
    pub conn: ConnId,
    /// A `sync`'s reply body (its path), sent once the leader's zxid is
    /// applied here.
    pub sync_reply: Option<Vec<u8>>,
}

/// A learner's new session waiting for its CreateSession txn.
pub(super) struct PendingConnect {
    pub conn: ConnId,
    pub ip: String,
    pub port: u16,
    pub rsp: ConnectResponse,
}

/// Why a delivered proposal could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    Undecodable(u64),
    DoesNotApply(i64),
    Digest { zxid: i64, ours: u64, leaders: u64 },
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Divergence::Undecodable(z) => write!(f, "txn 0x{z:x} does not decode"),
            Divergence::DoesNotApply(z) => {
                write!(f, "txn 0x{z:x} does not apply to this replica's tree")
            }
            Divergence::Digest {
                zxid,
                ours,
                leaders,
            } => write!(
                f,
                "tree digest after 0x{zxid:x} is {ours:016x} here and {leaders:016x} at the leader"
            ),
        }
    }
}

impl Server {
    pub fn role(&self) -> Role {
        self.role
    }

    /// Enters a role (at start-up and on every ZAB role change). Clients are
    /// disconnected, as ZooKeeper does: they reconnect, to this server or
    /// another, with their sessions. A new leader gives every session a full
    /// timeout from now, and starts its zxids in `epoch`.
    pub fn set_role(&mut self, role: Role, epoch: u64, now: Now) {
        self.now = now;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in conns {
            self.detach(c);
            self.close(c);
        }
        for (_, p) in self.pending_connects.drain() {
            self.effects.push(super::Effect::Close(p.conn));
        }
        self.outstanding.clear();
        self.waiting.clear();
        self.inflight.clear();
        self.syncs.clear();
        self.proposals.clear();
        self.forwards.clear();
        self.role = role;
        self.epoch_base = 0;
        if role == Role::Leader {
            let ids: Vec<i64> = self.sessions.iter().map(|s| s.id).collect();
            for id in ids {
                self.sessions.touch(id, now.mono_ms);
            }
            self.epoch_base = (epoch as i64) << 32;
            self.next_reap_ms = now.mono_ms + self.cfg.reap_interval_ms;
        }
    }

    /// Leader: the txns prepared since the last call, in zxid order.
    pub fn take_proposals(&mut self) -> Vec<(i64, Vec<u8>)> {
        std::mem::take(&mut self.proposals)
            .into_iter()
            .map(|p| (p.hdr.zxid, p.encode()))
            .collect()
    }

    /// Learner: requests for the leader.
    pub fn take_forwards(&mut self) -> Vec<Forward> {
        std::mem::take(&mut self.forwards)
    }

    /// Learner: sessions with a client connected here, for the leader to
    /// keep alive.
    pub fn local_sessions(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.conns.values().map(|c| c.session).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Leader: a learner's clients are alive.
    pub fn touch_sessions(&mut self, now: Now, ids: &[i64]) {
        for id in ids {
            self.sessions.touch(*id, now.mono_ms);
        }
    }

    /// Leader: prepares a learner's request. Returns the zxid a `sync` must
    /// wait for; everything else becomes a proposal.
    pub fn forwarded(&mut self, now: Now, f: Forward) -> Option<i64> {
        self.now = now;
        if self.role != Role::Leader {
            return None;
        }
        let alive = self.sessions.get(f.session).is_some_and(|s| !s.closing);
        match f.kind {
            ForwardKind::Sync => return Some(self.last_zxid),
            ForwardKind::CreateSession { timeout_ms, passwd } => {
                if self.sessions.get(f.session).is_some() {
                    // A retried create: the session exists already.
                    self.error_txn(now, &f, ErrorCode::NODE_EXISTS);
                } else {
                    self.commit_txn(
                        now,
                        f.session,
                        f.cxid,
                        Txn::CreateSession { timeout_ms, passwd },
                    );
                    self.answer_with(f.origin, 0, None);
                }
            }
            ForwardKind::CloseSession => {
                if alive {
                    if let Some(s) = self.sessions.get_mut(f.session) {
                        s.closing = true;
                    }
                    self.commit_txn(now, f.session, f.cxid, Txn::CloseSession);
                    self.answer_with(f.origin, 0, None);
                } else {
                    self.error_txn(now, &f, ErrorCode::SESSION_EXPIRED);
                }
            }
            ForwardKind::Op {
                op,
                ref body,
                ref ids,
            } => {
                let Some(opc) = OpCode::from_i32(op) else {
                    self.error_txn(now, &f, ErrorCode::UNIMPLEMENTED);
                    return None;
                };
                if !alive {
                    self.error_txn(now, &f, ErrorCode::SESSION_EXPIRED);
                    return None;
                }
                if self.read_only {
                    // The leader's disk is (nearly) full: refuse as a
                    // read-only server would, as for its own clients.
                    self.error_txn(now, &f, ErrorCode::NOT_READ_ONLY);
                    return None;
                }
                match self.prepare(now, f.session, f.cxid, ids, opc, body) {
                    None => self.error_txn(now, &f, ErrorCode::MARSHALLING_ERROR),
                    Some(Ok(applied)) => self.answer_with(f.origin, 0, applied.encode()),
                    Some(Err(e)) => self.answer_with(f.origin, e.0, None),
                }
            }
        }
        None
    }

    /// Marks the txn just recorded as answering `origin`'s client.
    fn answer_with(&mut self, origin: u64, err: i32, reply: Option<Vec<u8>>) {
        if let Some(p) = self.proposals.last_mut() {
            p.origin = origin;
            p.err = err;
            p.reply = reply;
        }
    }

    fn error_txn(&mut self, now: Now, f: &Forward, e: ErrorCode) {
        let hdr = self.next_header(now, f.session, f.cxid);
        self.tree.begin();
        let changes = self.tree.commit();
        self.record(hdr, Txn::Error(e.0), changes);
        self.answer_with(f.origin, e.0, None);
    }

    /// Applies a txn ZAB delivered. A txn this server already applied (the
    /// leader prepared it) is skipped. On divergence nothing more may be
    /// served.
    pub fn apply_delivered(&mut self, now: Now, zxid: u64, data: &[u8]) -> Result<(), Divergence> {
        self.now = now;
        if zxid as i64 <= self.last_zxid {
            return Ok(());
        }
        let p = Proposal::decode(data).map_err(|_| Divergence::Undecodable(zxid))?;
        let hdr = p.hdr;
        self.tree.begin();
        if !crate::apply::apply_tree(&mut self.tree, &hdr, &p.txn) {
            self.tree.rollback();
            return Err(Divergence::DoesNotApply(hdr.zxid));
        }
        let local_conn = self.sessions.get(hdr.session).and_then(|s| s.conn);
        match &p.txn {
            Txn::CreateSession { timeout_ms, passwd } => {
                self.sessions
                    .add(hdr.session, *timeout_ms, *passwd, now.mono_ms);
                self.persist
                    .sessions
                    .push((hdr.session, Some(encode_session(*timeout_ms, passwd))));
            }
            Txn::CloseSession => {
                self.sessions.remove(hdr.session);
                self.persist.sessions.push((hdr.session, None));
            }
            _ => {}
        }
        let changes = self.tree.commit();
        // What the answer below needs of the txn, which `record` takes.
        let (opens, closes) = (
            matches!(p.txn, Txn::CreateSession { .. }),
            matches!(p.txn, Txn::CloseSession),
        );
        self.record(hdr, p.txn, changes);
        if let Some(leaders) = p.digest.filter(|d| *d != self.tree.digest()) {
            return Err(Divergence::Digest {
                zxid: hdr.zxid,
                ours: self.tree.digest(),
                leaders,
            });
        }
        let mine = p.origin == self.cfg.server_id as u64;
        if opens {
            if mine {
                if let Some(pc) = self.pending_connects.remove(&hdr.session) {
                    if p.err == 0 {
                        self.attach(now, pc.conn, &pc.ip, pc.port, hdr.session);
                        self.send_connect_response(pc.conn, &pc.rsp);
                    } else {
                        self.close(pc.conn);
                    }
                }
            }
        } else if closes {
            let answered = mine && self.outstanding.contains_key(&(hdr.session, hdr.cxid));
            if answered {
                self.answer(hdr.session, hdr.cxid, 0, None);
            }
            // Closed or expired elsewhere: the client here is told by
            // losing its connection, as with a standalone expiry.
            if let Some(c) = local_conn {
                self.detach(c);
                self.close(c);
            }
        } else if mine {
            self.answer(hdr.session, hdr.cxid, p.err, p.reply.as_deref());
        }
        self.release_syncs();
        Ok(())
    }

    /// Learner: sends the leader's answer to the client that asked, then
    /// lets that connection's queued requests run.
    fn answer(&mut self, session: i64, cxid: i32, err: i32, body: Option<&[u8]>) {
        let Some(o) = self.outstanding.remove(&(session, cxid)) else {
            return;
        };
        if let Some(n) = self.inflight.get_mut(&o.conn) {
            *n -= 1;
            if *n == 0 {
                self.inflight.remove(&o.conn);
            }
        }
        self.reply(o.conn, cxid, ErrorCode(err), body);
        self.resume(o.conn);
    }

    /// Runs the connection's queued frames that may run now: writes go to
    /// the leader behind the ones in flight; a read waits until every
    /// earlier write is answered, so it sees them and nothing later.
    fn resume(&mut self, conn: ConnId) {
        let Some(mut queue) = self.waiting.remove(&conn) else {
            return;
        };
        let now = self.now;
        while let Some(body) = queue.pop_front() {
            if self.inflight.get(&conn).is_some_and(|n| *n > 0) && !forwarded_op(&body) {
                queue.push_front(body);
                self.waiting.insert(conn, queue);
                return;
            }
            self.run_packet(now, conn, &body);
        }
    }
    /// Learner: the leader says a `sync` is done once this server has
    /// applied `upto`.
    pub fn sync_done(&mut self, session: i64, cxid: i32, upto: i64) {
        self.syncs.push((upto, session, cxid));
        self.release_syncs();
    }

    fn release_syncs(&mut self) {
        if self.syncs.is_empty() {
            return;
        }
        let z = self.last_zxid;
        let (ready, wait): (Vec<_>, Vec<_>) = self.syncs.drain(..).partition(|s| s.0 <= z);
        self.syncs = wait;
        for (_, session, cxid) in ready {
            let body = self
                .outstanding
                .get(&(session, cxid))
                .and_then(|o| o.sync_reply.clone());
            self.answer(session, cxid, 0, body.as_deref());
        }
    }

    /// Learner: hands a request to the leader and holds the connection's
    /// later requests until it is answered.
    pub(super) fn forward(
        &mut self,
        conn: ConnId,
        session: i64,
        cxid: i32,
        kind: ForwardKind,
        sync_reply: Option<Vec<u8>>,
    ) {
        self.outstanding
            .insert((session, cxid), Outstanding { conn, sync_reply });
        *self.inflight.entry(conn).or_insert(0) += 1;
        self.forwards.push(Forward {
            origin: self.cfg.server_id as u64,
            session,
            cxid,
            kind,
        });
    }

    /// Learner: a new session is created by the leader; the client hears
    /// back once the txn is delivered here.
    pub(super) fn forward_connect(
        &mut self,
        conn: ConnId,
        ip: &str,
        port: u16,
        rsp: ConnectResponse,
    ) {
        let id = rsp.session_id;
        let timeout_ms = rsp.timeout_ms;
        let passwd: [u8; 16] = rsp.passwd[..].try_into().expect("16-byte password");
        self.pending_connects.insert(
            id,
            PendingConnect {
                conn,
                ip: ip.to_owned(),
                port,
                rsp,
            },
        );
        self.forwards.push(Forward {
            origin: self.cfg.server_id as u64,
            session: id,
            cxid: 0,
            kind: ForwardKind::CreateSession { timeout_ms, passwd },
        });
    }

    /// Learner: a frame waits if frames before it wait, or if it is not
    /// for the leader and writes of its connection are in flight.
    pub(super) fn queue_if_waiting(&mut self, conn: ConnId, body: &[u8]) -> bool {
        if let Some(q) = self.waiting.get_mut(&conn) {
            q.push_back(body.to_vec());
            return true;
        }
        if self.inflight.get(&conn).is_some_and(|n| *n > 0) && !forwarded_op(body) {
            self.waiting
                .entry(conn)
                .or_default()
                .push_back(body.to_vec());
            return true;
        }
        false
    }

    /// The tree's digest and the zxid of the last txn in it.
    pub fn digest(&self) -> (i64, u64) {
        (self.last_zxid, self.tree.digest())
    }

    /// Learner: requests waiting for the leader (for `mntr`).
    pub fn outstanding_forwards(&self) -> usize {
        self.outstanding.len() + self.pending_connects.len()
    }
}

/// Does a learner hand this frame to the leader (writes, session close,
/// sync)? Read from the request header's type field.
fn forwarded_op(body: &[u8]) -> bool {
    let Some(op) = body
        .get(4..8)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return false;
    };
    OpCode::from_i32(op)
        .is_some_and(|op| op.is_write() || matches!(op, OpCode::CloseSession | OpCode::Sync))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zk_proto::records::Acl;

    #[test]
    fn proposals_and_forwards_round_trip() {
        let p = Proposal {
            hdr: TxnHeader {
                session: 5,
                cxid: 6,
                zxid: 7 << 32 | 1,
                time: 8,
            },
            txn: Txn::Create {
                path: "/a".into(),
                data: b"x".to_vec().into(),
                acl: Acl::open_unsafe(),
                ephemeral_owner: 0,
                parent_cversion: 1,
            },
            origin: 2,
            err: 0,
            reply: Some(b"/a".to_vec()),
            digest: Some(0xdead_beef_0000_0001),
        };
        assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
        let q = Proposal { reply: None, ..p };
        assert_eq!(Proposal::decode(&q.encode()).unwrap(), q);
        // As an earlier zkd wrote it (a digest of scheme 1, no tag): read
        // with the same origin and no digest to check.
        let mut w = Writer::new();
        w.i64(2).i64(0x1234).i32(0);
        w.null();
        w.bytes(&Txn::encode_entry(&q.hdr, &q.txn));
        let old = Proposal::decode(&w.buf).unwrap();
        assert_eq!((old.origin, old.digest), (2, None));
        assert_eq!(
            Proposal {
                digest: None,
                ..q.clone()
            },
            old
        );
        for kind in [
            ForwardKind::Op {
                op: 1,
                body: vec![1, 2],
                ids: vec![Id {
                    scheme: "digest".into(),
                    id: "u:x".into(),
                }],
            },
            ForwardKind::CreateSession {
                timeout_ms: 4000,
                passwd: [9; 16],
            },
            ForwardKind::CloseSession,
            ForwardKind::Sync,
        ] {
            let f = Forward {
                origin: 3,
                session: -1,
                cxid: 4,
                kind,
            };
            assert_eq!(Forward::decode(&f.encode()).unwrap(), f);
        }
        assert!(Forward::decode(&[0, 1]).is_err());
    }
}
