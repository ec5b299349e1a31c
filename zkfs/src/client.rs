//! A blocking ZooKeeper client with one session that survives server changes.
//!
//! Why blocking: FUSE callbacks are synchronous, so every filesystem request
//! wants "send this, wait for that". Calls may still be pipelined (`submit`
//! returns a ticket; `wait` collects it), which readdir uses to stat many
//! children in one round trip.
//!
//! Threads: one reader per TCP connection (replies, watch events, pings) and one
//! keeper that connects, fails over to the next server of the connect string,
//! re-registers auth and watches, and pings. The session is never replaced
//! behind the caller's back: once a server says it has expired every call fails
//! with `SessionExpired` until `renew` is called explicitly.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use zk_proto::records::*;
use zk_proto::{ErrorCode, OpCode, Reader, Writer};

/// What a call can fail with: a ZooKeeper error code (`ErrorCode`), which
/// includes CONNECTION_LOSS and SESSION_EXPIRED for the client-side states.
pub type ZkResult<T> = Result<T, ErrorCode>;

/// A watch notification with the chroot already removed from the path.
#[derive(Debug, Clone)]
pub struct Event {
    pub typ: i32,
    pub path: String,
}

/// What the keeper reports besides node events.
#[derive(Debug, Clone)]
pub enum Notice {
    Node(Event),
    /// A (re)connection: caches must be treated as stale, events may be missed.
    Connected,
    Expired,
}

pub struct Config {
    pub hosts: Vec<String>,
    pub chroot: String,
    pub timeout_ms: i32,
    pub auth: Vec<(String, Vec<u8>)>,
    /// Paths (chroot-relative) that get a persistent recursive watch.
    pub recursive_watches: Vec<String>,
}

struct Conn {
    stream: TcpStream,
    generation: u64,
}

struct State {
    conn: Option<Conn>,
    generation: u64,
    session_id: i64,
    passwd: Vec<u8>,
    negotiated_ms: i32,
    expired: bool,
    closed: bool,
    next_xid: i32,
    pending: HashMap<i32, Sender<(i32, Vec<u8>)>>,
    last_zxid: i64,
    next_host: usize,
    last_recv: Instant,
}

struct Inner {
    cfg: Config,
    state: Mutex<State>,
    changed: Condvar,
    notices: Mutex<Option<Sender<Notice>>>,
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A submitted request; `Client::wait` turns it into the reply body.
pub struct Ticket(Result<Receiver<(i32, Vec<u8>)>, ErrorCode>);

impl Client {
    /// Connects (waiting up to the session timeout for a first server) and starts
    /// the keeper thread.
    pub fn connect(cfg: Config, notices: Sender<Notice>) -> ZkResult<Client> {
        let inner = Arc::new(Inner {
            cfg,
            state: Mutex::new(State {
                conn: None,
                generation: 0,
                session_id: 0,
                passwd: vec![0; 16],
                negotiated_ms: 0,
                expired: false,
                closed: false,
                next_xid: 1,
                pending: HashMap::new(),
                last_zxid: 0,
                next_host: 0,
                last_recv: Instant::now(),
            }),
            changed: Condvar::new(),
            notices: Mutex::new(Some(notices)),
        });
        let c = Client { inner };
        let deadline =
            Instant::now() + Duration::from_millis(c.inner.cfg.timeout_ms.max(1000) as u64);
        // First connection on the caller's thread so a bad connect string fails the mount.
        loop {
            if c.inner.try_connect() {
                break;
            }
            if Instant::now() > deadline {
                return Err(ErrorCode::CONNECTION_LOSS);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let k = c.inner.clone();
        std::thread::Builder::new()
            .name("zk-keeper".into())
            .spawn(move || k.keep())
            .expect("spawn keeper");
        Ok(c)
    }

    pub fn session_id(&self) -> i64 {
        self.inner.state.lock().unwrap().session_id
    }

    /// Starts a new session after expiry. Only ever on an explicit request: the
    /// old session's ephemerals and locks are gone and the caller must know.
    pub fn renew(&self) -> ZkResult<()> {
        {
            let mut st = self.inner.state.lock().unwrap();
            if !st.expired {
                return Ok(());
            }
            st.expired = false;
            st.session_id = 0;
            st.passwd = vec![0; 16];
        }
        self.inner.changed.notify_all();
        let deadline = Instant::now() + Duration::from_millis(self.inner.cfg.timeout_ms as u64);
        let mut st = self.inner.state.lock().unwrap();
        while st.conn.is_none() && !st.expired && Instant::now() < deadline {
            st = self
                .inner
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap()
                .0;
        }
        if st.conn.is_some() {
            Ok(())
        } else {
            Err(ErrorCode::CONNECTION_LOSS)
        }
    }

    /// Closes the session (ephemerals go at once) and stops the keeper.
    pub fn close(&self) {
        // Without a connection there is nobody to tell: do not wait for one
        // (an unmount after the server went away must not hang); the session
        // then ends by expiring.
        let connected = self.inner.state.lock().unwrap().conn.is_some();
        if connected {
            let t = self.submit(OpCode::CloseSession as i32, Vec::new());
            let _ = self.wait_for(t, Duration::from_secs(2));
        }
        let mut st = self.inner.state.lock().unwrap();
        st.closed = true;
        if let Some(c) = st.conn.take() {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        self.inner.changed.notify_all();
    }

    /// Queues a request without waiting for its reply.
    pub fn submit(&self, op: i32, body: Vec<u8>) -> Ticket {
        let wait_until =
            Instant::now() + Duration::from_millis(self.inner.cfg.timeout_ms.max(1000) as u64);
        let mut st = self.inner.state.lock().unwrap();
        loop {
            if st.expired {
                return Ticket(Err(ErrorCode::SESSION_EXPIRED));
            }
            if st.closed {
                return Ticket(Err(ErrorCode::CONNECTION_LOSS));
            }
            if st.conn.is_some() {
                break;
            }
            let now = Instant::now();
            if now >= wait_until {
                return Ticket(Err(ErrorCode::CONNECTION_LOSS));
            }
            st = self
                .inner
                .changed
                .wait_timeout(st, wait_until - now)
                .unwrap()
                .0;
        }
        let xid = st.next_xid;
        st.next_xid = if xid >= i32::MAX - 1 { 1 } else { xid + 1 };
        let mut w = Writer::framed();
        w.i32(xid).i32(op).bytes(&body);
        let frame = w.finish_frame();
        let (tx, rx) = channel();
        let conn = st.conn.as_mut().unwrap();
        if conn.stream.write_all(&frame).is_err() {
            let g = conn.generation;
            self.inner.drop_conn(&mut st, g);
            return Ticket(Err(ErrorCode::CONNECTION_LOSS));
        }
        st.pending.insert(xid, tx);
        Ticket(Ok(rx))
    }

    pub fn wait(&self, t: Ticket) -> ZkResult<Vec<u8>> {
        let d = Duration::from_millis(self.inner.cfg.timeout_ms.max(1000) as u64 * 2);
        self.wait_for(t, d)
    }

    fn wait_for(&self, t: Ticket, d: Duration) -> ZkResult<Vec<u8>> {
        let rx = t.0?;
        match rx.recv_timeout(d) {
            Ok((0, body)) => Ok(body),
            Ok((e, _)) => Err(ErrorCode(e)),
            Err(RecvTimeoutError::Timeout) => Err(ErrorCode::OPERATION_TIMEOUT),
            Err(RecvTimeoutError::Disconnected) => Err(ErrorCode::CONNECTION_LOSS),
        }
    }

    pub fn call(&self, op: OpCode, body: Vec<u8>) -> ZkResult<Vec<u8>> {
        let t = self.submit(op as i32, body);
        self.wait(t)
    }

    // ---- typed calls; paths are chroot-relative ----

    pub fn full(&self, path: &str) -> String {
        full_of(&self.inner.cfg.chroot, path)
    }

    pub fn strip(&self, path: &str) -> String {
        self.inner.strip(path)
    }

    pub fn exists_ticket(&self, path: &str) -> Ticket {
        let body = PathWatch {
            path: self.full(path),
            watch: false,
        }
        .encode();
        self.submit(OpCode::Exists as i32, body)
    }

    pub fn stat_of(body: ZkResult<Vec<u8>>) -> ZkResult<Stat> {
        let b = body?;
        StatResponse::decode(&b)
            .map(|r| r.stat)
            .map_err(|_| ErrorCode::MARSHALLING_ERROR)
    }

    pub fn exists(&self, path: &str) -> ZkResult<Stat> {
        let t = self.exists_ticket(path);
        Self::stat_of(self.wait(t))
    }

    pub fn get_data(&self, path: &str) -> ZkResult<(Vec<u8>, Stat)> {
        let body = PathWatch {
            path: self.full(path),
            watch: false,
        }
        .encode();
        let b = self.call(OpCode::GetData, body)?;
        let r = GetDataResponse::decode(&b).map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        Ok((r.data, r.stat))
    }

    pub fn children(&self, path: &str) -> ZkResult<(Vec<String>, Stat)> {
        let body = PathWatch {
            path: self.full(path),
            watch: false,
        }
        .encode();
        let b = self.call(OpCode::GetChildren2, body)?;
        let r = GetChildren2Response::decode(&b).map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        Ok((r.children, r.stat))
    }

    pub fn set_data(&self, path: &str, data: &[u8], version: i32) -> ZkResult<Stat> {
        let body = SetDataRequest {
            path: self.full(path),
            data: data.to_vec(),
            version,
        }
        .encode();
        Self::stat_of(self.call(OpCode::SetData, body))
    }

    /// create2 (or createTTL): returns the created path (chroot-relative) and stat.
    pub fn create(
        &self,
        path: &str,
        data: &[u8],
        acl: &[Acl],
        flags: i32,
        ttl: i64,
    ) -> ZkResult<(String, Stat)> {
        let full = self.full(path);
        let (op, body) = if ttl > 0 {
            let r = CreateTtlRequest {
                path: full,
                data: data.to_vec(),
                acl: acl.to_vec(),
                flags,
                ttl,
            };
            (OpCode::CreateTtl, r.encode())
        } else {
            let r = CreateRequest {
                path: full,
                data: data.to_vec(),
                acl: acl.to_vec(),
                flags,
            };
            let op = if flags == 4 {
                OpCode::CreateContainer
            } else {
                OpCode::Create2
            };
            (op, r.encode())
        };
        let b = self.call(op, body)?;
        let r = Create2Response::decode(&b).map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        Ok((self.strip(&r.path), r.stat))
    }

    pub fn delete(&self, path: &str, version: i32) -> ZkResult<()> {
        let body = DeleteRequest {
            path: self.full(path),
            version,
        }
        .encode();
        self.call(OpCode::Delete, body).map(|_| ())
    }

    pub fn get_acl(&self, path: &str) -> ZkResult<(Vec<Acl>, Stat)> {
        let t = self.get_acl_ticket(path);
        Self::acl_of(self.wait(t))
    }

    pub fn get_acl_ticket(&self, path: &str) -> Ticket {
        let body = PathRequest {
            path: self.full(path),
        }
        .encode();
        self.submit(OpCode::GetAcl as i32, body)
    }

    pub fn acl_of(body: ZkResult<Vec<u8>>) -> ZkResult<(Vec<Acl>, Stat)> {
        let r = GetAclResponse::decode(&body?).map_err(|_| ErrorCode::MARSHALLING_ERROR)?;
        Ok((r.acl, r.stat))
    }

    pub fn set_acl(&self, path: &str, acl: &[Acl], version: i32) -> ZkResult<Stat> {
        let body = SetAclRequest {
            path: self.full(path),
            acl: acl.to_vec(),
            version,
        }
        .encode();
        Self::stat_of(self.call(OpCode::SetAcl, body))
    }

    pub fn sync(&self, path: &str) -> ZkResult<()> {
        let body = PathRequest {
            path: self.full(path),
        }
        .encode();
        self.call(OpCode::Sync, body).map(|_| ())
    }

    /// multi: paths inside `ops` must be chroot-relative; they are rewritten here.
    /// On failure returns the first real per-op error.
    pub fn multi(&self, mut ops: Vec<MultiOp>) -> ZkResult<Vec<MultiResult>> {
        for op in ops.iter_mut() {
            match op {
                MultiOp::Create { req, .. } => req.path = self.full(&req.path),
                MultiOp::CreateTtl(r) => r.path = self.full(&r.path),
                MultiOp::Delete(r) => r.path = self.full(&r.path),
                MultiOp::SetData(r) => r.path = self.full(&r.path),
                MultiOp::Check(r) => r.path = self.full(&r.path),
                MultiOp::GetChildren(r) | MultiOp::GetData(r) => r.path = self.full(&r.path),
            }
        }
        let body = MultiRequest { ops }.encode();
        let t = self.submit(OpCode::Multi as i32, body);
        let rx = t.0?;
        let d = Duration::from_millis(self.inner.cfg.timeout_ms.max(1000) as u64 * 2);
        let (err, b) = rx.recv_timeout(d).map_err(|_| ErrorCode::CONNECTION_LOSS)?;
        let r = MultiResponse::decode(&b).map_err(|_| {
            if err != 0 {
                ErrorCode(err)
            } else {
                ErrorCode::MARSHALLING_ERROR
            }
        })?;
        if err != 0 {
            let first = r
                .results
                .iter()
                .find_map(|x| match x {
                    MultiResult::Error(e)
                        if *e != 0 && *e != ErrorCode::RUNTIME_INCONSISTENCY.0 =>
                    {
                        Some(*e)
                    }
                    _ => None,
                })
                .unwrap_or(err);
            return Err(ErrorCode(first));
        }
        Ok(r.results)
    }
}

impl Inner {
    fn strip(&self, path: &str) -> String {
        let c = &self.cfg.chroot;
        if c.is_empty() {
            return path.to_string();
        }
        match path.strip_prefix(c.as_str()) {
            Some("") => "/".into(),
            Some(rest) if rest.starts_with('/') => rest.into(),
            _ => path.to_string(),
        }
    }

    fn notice(&self, n: Notice) {
        if let Some(tx) = self.notices.lock().unwrap().as_ref() {
            let _ = tx.send(n);
        }
    }

    /// Forgets a broken connection and fails what was waiting on it: those
    /// requests may or may not have been applied (ConnectionLoss, as ZooKeeper).
    fn drop_conn(&self, st: &mut State, generation: u64) {
        if let Some(c) = &st.conn {
            if c.generation != generation {
                return;
            }
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        } else {
            return;
        }
        st.conn = None;
        for (_, tx) in st.pending.drain() {
            let _ = tx.send((ErrorCode::CONNECTION_LOSS.0, Vec::new()));
        }
        self.changed.notify_all();
    }

    /// One attempt at one server. Returns true when connected.
    fn try_connect(self: &Arc<Self>) -> bool {
        let (host, session_id, passwd, last_zxid) = {
            let mut st = self.state.lock().unwrap();
            if st.closed || st.expired || st.conn.is_some() {
                return st.conn.is_some();
            }
            let h = self.cfg.hosts[st.next_host % self.cfg.hosts.len()].clone();
            st.next_host += 1;
            (h, st.session_id, st.passwd.clone(), st.last_zxid)
        };
        let timeout = Duration::from_millis((self.cfg.timeout_ms as u64 / 3).clamp(500, 5000));
        let Some(addr) = host.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
            log::warn!("cannot resolve {host}");
            return false;
        };
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(timeout));
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: last_zxid,
            timeout_ms: self.cfg.timeout_ms,
            session_id,
            passwd,
            read_only: Some(false),
        };
        let mut w = Writer::framed();
        req.write(&mut w);
        if s.write_all(&w.finish_frame()).is_err() {
            return false;
        }
        let Ok(body) = read_frame(&mut s) else {
            return false;
        };
        let Ok(resp) = ConnectResponse::decode(&body) else {
            return false;
        };
        if resp.timeout_ms <= 0 {
            log::error!(
                "session 0x{session_id:x} has expired; refusing to start a new one silently"
            );
            let mut st = self.state.lock().unwrap();
            st.expired = true;
            self.changed.notify_all();
            drop(st);
            self.notice(Notice::Expired);
            return false;
        }
        let read_timeout = Duration::from_millis((resp.timeout_ms as u64 * 2 / 3).max(300));
        let _ = s.set_read_timeout(Some(read_timeout));
        // Auth and watches go out before any queued call can use the connection.
        let mut setup = Vec::new();
        for (scheme, auth) in &self.cfg.auth {
            let mut w = Writer::framed();
            w.i32(zk_proto::codes::xid::AUTH).i32(OpCode::Auth as i32);
            AuthPacket {
                typ: 0,
                scheme: scheme.clone(),
                auth: auth.clone(),
            }
            .write(&mut w);
            setup.extend(w.finish_frame());
        }
        if !self.cfg.recursive_watches.is_empty() {
            if session_id == resp.session_id && session_id != 0 {
                let mut w = Writer::framed();
                w.i32(zk_proto::codes::xid::SET_WATCHES)
                    .i32(OpCode::SetWatches2 as i32);
                SetWatches2 {
                    relative_zxid: last_zxid,
                    persistent_recursive_watches: self
                        .cfg
                        .recursive_watches
                        .iter()
                        .map(|p| full_of(&self.cfg.chroot, p))
                        .collect(),
                    ..Default::default()
                }
                .write(&mut w);
                setup.extend(w.finish_frame());
            } else {
                for p in &self.cfg.recursive_watches {
                    let mut w = Writer::framed();
                    // xid -3 is unused by ZooKeeper's own client; the reply is ignored.
                    w.i32(-3)
                        .i32(OpCode::AddWatch as i32)
                        .ustring(&full_of(&self.cfg.chroot, p))
                        .i32(1);
                    setup.extend(w.finish_frame());
                }
            }
        }
        if s.write_all(&setup).is_err() {
            return false;
        }
        let Ok(reader) = s.try_clone() else {
            return false;
        };
        let generation = {
            let mut st = self.state.lock().unwrap();
            if st.closed {
                return false;
            }
            st.generation += 1;
            st.session_id = resp.session_id;
            st.passwd = resp.passwd.clone();
            st.negotiated_ms = resp.timeout_ms;
            st.last_recv = Instant::now();
            let g = st.generation;
            st.conn = Some(Conn {
                stream: s,
                generation: g,
            });
            self.changed.notify_all();
            g
        };
        log::info!(
            "connected to {host}, session 0x{:x}, timeout {} ms",
            resp.session_id,
            resp.timeout_ms
        );
        let me = self.clone();
        std::thread::Builder::new()
            .name("zk-reader".into())
            .spawn(move || me.read_loop(reader, generation))
            .expect("spawn reader");
        self.notice(Notice::Connected);
        true
    }

    fn read_loop(self: Arc<Self>, mut s: TcpStream, generation: u64) {
        loop {
            let body = match read_frame(&mut s) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("connection lost: {e}");
                    let mut st = self.state.lock().unwrap();
                    self.drop_conn(&mut st, generation);
                    return;
                }
            };
            let mut r = Reader::new(&body);
            let Ok(hdr) = ReplyHeader::read(&mut r) else {
                continue;
            };
            let rest = r.rest().to_vec();
            let mut st = self.state.lock().unwrap();
            st.last_recv = Instant::now();
            if hdr.zxid > st.last_zxid {
                st.last_zxid = hdr.zxid;
            }
            match hdr.xid {
                -1 => {
                    drop(st);
                    if let Ok(ev) = WatcherEvent::decode(&rest) {
                        if ev.typ != -1 {
                            let path = self.strip(&ev.path);
                            self.notice(Notice::Node(Event { typ: ev.typ, path }));
                        }
                    }
                }
                -2 | -3 | -8 => {}
                -4 => {
                    if hdr.err != 0 {
                        log::error!("authentication failed ({})", ErrorCode(hdr.err).name());
                    }
                }
                xid => {
                    if let Some(tx) = st.pending.remove(&xid) {
                        let _ = tx.send((hdr.err, rest));
                    }
                }
            }
        }
    }

    /// The keeper: pings while connected, reconnects (next server first) while not.
    fn keep(self: Arc<Self>) {
        loop {
            let (connected, closed, expired, ms) = {
                let st = self.state.lock().unwrap();
                (
                    st.conn.is_some(),
                    st.closed,
                    st.expired,
                    st.negotiated_ms.max(1000),
                )
            };
            if closed {
                return;
            }
            if expired {
                let st = self.state.lock().unwrap();
                let _ = self.changed.wait_timeout(st, Duration::from_millis(500));
                continue;
            }
            if !connected {
                if !self.try_connect() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            std::thread::sleep(Duration::from_millis((ms as u64 / 3).min(2000)));
            let mut st = self.state.lock().unwrap();
            if let Some(c) = st.conn.as_mut() {
                let mut w = Writer::framed();
                w.i32(zk_proto::codes::xid::PING).i32(OpCode::Ping as i32);
                let g = c.generation;
                if c.stream.write_all(&w.finish_frame()).is_err() {
                    self.drop_conn(&mut st, g);
                }
            }
        }
    }
}

fn full_of(chroot: &str, p: &str) -> String {
    if chroot.is_empty() {
        p.to_string()
    } else if p == "/" {
        chroot.to_string()
    } else {
        format!("{chroot}{p}")
    }
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    let n = i32::from_be_bytes(head);
    if !(0..=64 << 20).contains(&n) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad frame length {n}"),
        ));
    }
    let mut body = vec![0u8; n as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroot_paths_round_trip() {
        assert_eq!(full_of("/app", "/"), "/app");
        assert_eq!(full_of("/app", "/x"), "/app/x");
        assert_eq!(full_of("", "/x"), "/x");
    }
}
