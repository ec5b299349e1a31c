//! TCP between ensemble members. Each member listens on its election port
//! (votes) and its quorum port (the ZAB stream and forwarded requests), and
//! keeps one outgoing connection per peer and channel, redialled when it
//! breaks. A peer is named by the hello it sends first; messages from it
//! arrive on the connection it opened, replies leave on ours.
//!
//! Loss is reported, never hidden: when a quorum connection breaks (either
//! direction) the core hears `Disconnected`, and frames queued while a link
//! was down are dropped, which ZAB sees as a broken stream (its sequence
//! numbers) and recovers from by resyncing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::hold::Holds;
use super::link::{self, Link, Writer};
use super::wire::{Channel, Frame, HELLO_MAGIC, PEER_FRAME_MAX};

pub type Id = u64;

/// What the core hears about its peers: from the transport, and from the
/// thread that reads a SNAP's state (`hold`).
#[derive(Debug)]
pub enum PeerEvent {
    Frame(Id, Frame),
    Disconnected(Id),
    /// The SNAP for a learner whose stream hold `token` keeps.
    Snap {
        to: Id,
        token: u64,
        snap: super::hold::SnapRead,
    },
}

/// A peer's addresses.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    pub id: Id,
    pub election: SocketAddr,
    pub quorum: SocketAddr,
}

/// Sending side: one queue per peer and channel.
pub struct Transport {
    links: HashMap<(Id, u8), Link>,
    /// Learners whose ZAB stream waits for their SNAP.
    holds: Holds,
}

/// A write that takes longer than this means the peer is stuck (stopped,
/// or its buffers are full): drop the connection rather than queue forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REDIAL_PAUSE: Duration = Duration::from_millis(200);
/// Frames this big are snapshots; their memory is handed back once sent.
const BIG_FRAME: usize = 16 << 20;

impl Transport {
    /// Starts dialling every peer; events arrive on `events`. Outgoing
    /// connections leave from our own quorum address, so a peer's traffic
    /// is identified by address in both directions (which is also what
    /// lets tests cut links with packet filters).
    pub fn start(
        me: Id,
        peers: &[PeerAddr],
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Transport {
        let mut links = HashMap::new();
        let local = peers
            .iter()
            .find(|p| p.id == me)
            .map(|p| p.quorum.ip())
            .filter(|ip| !ip.is_unspecified());
        for p in peers.iter().filter(|p| p.id != me) {
            for (ch, addr) in [(Channel::Election, p.election), (Channel::Quorum, p.quorum)] {
                let (tx, rx) = link::new();
                links.insert((p.id, ch as u8), tx);
                tokio::spawn(dial(me, p.id, ch, addr, local, rx, events.clone()));
            }
        }
        Transport {
            links,
            holds: Holds::default(),
        }
    }

    pub fn send(&mut self, to: Id, f: &Frame) {
        let ch = f.channel();
        let mut frame = f.encode();
        if ch == Channel::Quorum {
            match self.holds.keep(to, frame) {
                Some(f) => frame = f,
                None => return,
            }
        }
        self.send_bytes(to, ch, frame);
    }

    fn send_bytes(&self, to: Id, ch: Channel, frame: Vec<u8>) {
        if let Some(tx) = self.links.get(&(to, ch as u8)) {
            tx.send(frame);
        }
    }

    /// Holds the ZAB stream to `to` until `release` with the token.
    pub fn hold(&mut self, to: Id) -> u64 {
        self.holds.hold(to)
    }

    /// Sends `first` (an encoded frame) to `to`, then what its hold kept:
    /// how many frames that was. `None`, sending nothing, if hold `token`
    /// ended before.
    pub fn release(&mut self, to: Id, token: u64, first: Vec<u8>) -> Option<usize> {
        let kept = self.holds.release(to, token)?;
        let n = kept.len();
        for frame in std::iter::once(first).chain(kept) {
            self.send_bytes(to, Channel::Quorum, frame);
        }
        Some(n)
    }

    /// Ends the hold of `to`, dropping what it kept: a gap the learner
    /// sees in its stream, and recovers from by syncing again.
    pub fn drop_hold(&mut self, to: Id) {
        self.holds.drop_peer(to);
    }

    /// Ends every hold (this member stopped leading).
    pub fn drop_holds(&mut self) {
        self.holds.clear();
    }

    /// The link that carries the ZAB stream to `to`, for a thread that
    /// sends on it directly (`Link::send_now`).
    pub fn quorum_link(&self, to: Id) -> Option<Link> {
        self.links.get(&(to, Channel::Quorum as u8)).cloned()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        for l in self.links.values() {
            l.end();
        }
    }
}

async fn dial(
    me: Id,
    peer: Id,
    ch: Channel,
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    mut rx: Writer,
    events: mpsc::UnboundedSender<PeerEvent>,
) {
    let mut was_up = false;
    loop {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(addr, local)).await {
            Ok(Ok(s)) => s,
            _ => {
                if ch == Channel::Quorum && (was_up || !rx.is_empty()) {
                    // Nothing reaches this peer: what was queued is lost.
                    let _ = events.send(PeerEvent::Disconnected(peer));
                }
                was_up = false;
                rx.discard();
                if rx.ended() {
                    return;
                }
                tokio::time::sleep(REDIAL_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if !was_up {
            log::debug!("connected to server.{peer} ({ch:?}) at {addr}");
        }
        was_up = true;
        let (mut rd, wr) = stream.into_split();
        let mut w = BufWriter::with_capacity(64 * 1024, wr);
        let mut hello = Vec::with_capacity(13);
        hello.extend_from_slice(&HELLO_MAGIC.to_be_bytes());
        hello.extend_from_slice(&me.to_be_bytes());
        hello.push(ch as u8);
        let mut ok = w.write_all(&hello).await.is_ok() && w.flush().await.is_ok();
        // Direct sends may follow the hello; they stop (the guard is
        // dropped) before the socket closes.
        let attached = rx.attach(w.get_ref().as_ref().as_raw_fd());
        let mut scratch = [0u8; 64];
        while ok {
            // The peer never writes on our connection: a read that ends
            // means it is gone, and we redial now rather than find out by
            // losing the next frame into a dead socket.
            let first = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = rd.read(&mut scratch) => break,
            };
            let write = async {
                w.write_all(&first).await?;
                // Send what is already queued in the same flush.
                for _ in 0..1024 {
                    match rx.try_recv() {
                        Some(more) => w.write_all(&more).await?,
                        None => break,
                    }
                }
                w.flush().await
            };
            ok = matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())));
            if first.len() >= BIG_FRAME {
                // A snapshot: hand its memory back now, not when later
                // allocations happen to make mimalloc purge.
                drop(first);
                crate::purge::release_freed_memory();
            }
        }
        drop(attached);
        log::info!("lost connection to server.{peer} ({ch:?}), redialling");
        if ch == Channel::Quorum {
            let _ = events.send(PeerEvent::Disconnected(peer));
        }
        rx.discard();
        tokio::time::sleep(REDIAL_PAUSE).await;
    }
}

async fn connect(addr: SocketAddr, local: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = local.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    sock.connect(addr).await
}

/// Accepts peers on one of our ports; frames from unknown ids or with bad
/// framing end that connection.
pub async fn accept(
    listener: TcpListener,
    known: Vec<Id>,
    events: mpsc::UnboundedSender<PeerEvent>,
) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let known = known.clone();
        let events = events.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_peer(stream, &known, &events).await {
                log::debug!("peer connection from {from}: {e}");
            }
        });
    }
}

async fn serve_peer(
    mut s: TcpStream,
    known: &[Id],
    events: &mpsc::UnboundedSender<PeerEvent>,
) -> Result<(), String> {
    let mut hello = [0u8; 13];
    tokio::time::timeout(CONNECT_TIMEOUT, s.read_exact(&mut hello))
        .await
        .map_err(|_| "no hello".to_string())?
        .map_err(|e| e.to_string())?;
    let magic = u32::from_be_bytes(hello[..4].try_into().expect("4 bytes"));
    let id = u64::from_be_bytes(hello[4..12].try_into().expect("8 bytes"));
    let ch = hello[12];
    if magic != HELLO_MAGIC || !known.contains(&id) || !(1..=2).contains(&ch) {
        return Err(format!(
            "bad hello (magic {magic:x}, id {id}, channel {ch})"
        ));
    }
    let mut r = tokio::io::BufReader::with_capacity(64 * 1024, s);
    // Only a connection that carried at least one well-formed frame can
    // report its peer lost: bytes from a stranger claiming an id must not
    // make us drop a leader.
    let mut proven = false;
    let result = loop {
        let mut len = [0u8; 4];
        if let Err(e) = r.read_exact(&mut len).await {
            break Err(e.to_string());
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > PEER_FRAME_MAX {
            break Err(format!("server.{id} sent a frame of {n} bytes"));
        }
        // Grow with the bytes that actually arrive: a length alone must not
        // make us allocate (a whole-log SNAP may be large, a lie is cheap).
        let mut body = Vec::with_capacity(n.min(1 << 20));
        match (&mut r).take(n as u64).read_to_end(&mut body).await {
            Ok(got) if got == n => {}
            Ok(got) => break Err(format!("server.{id} closed mid-frame ({got} of {n} bytes)")),
            Err(e) => break Err(e.to_string()),
        }
        match Frame::decode(&body) {
            Ok(f) => {
                proven = true;
                if events.send(PeerEvent::Frame(id, f)).is_err() {
                    break Ok(());
                }
            }
            Err(e) => break Err(format!("server.{id} sent an undecodable frame: {e:?}")),
        }
    };
    if ch == Channel::Quorum as u8 && proven {
        let _ = events.send(PeerEvent::Disconnected(id));
    }
    result
}
