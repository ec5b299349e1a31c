//! The client port: accepts connections, splits them into frames, and moves
//! bytes between sockets and the core. Nothing here decides anything about
//! the tree; it enforces only what belongs to the socket: `jute.maxbuffer`,
//! `maxClientCnxns` per address, and four-letter words on a connection's
//! first bytes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use zk_proto::frame::{check_len, four_letter_word};
use zk_proto::records::{ConnectRequest, Record};

use crate::config::Config;
use crate::frames::{Frames, WaitReadable};
use crate::outbox::{Gauge, Inbox, Out, Outbox};
use crate::runtime::{next_conn_id, Msg};

/// Connections per client address, for `maxClientCnxns`.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, u32>>);

struct IpSlot {
    ip: IpAddr,
    table: Arc<PerIp>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpSlot> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            table: self.clone(),
        })
    }
}

/// Serves the client port; with `tls`, the secure client port (the TLS
/// handshake must finish within 10 s, then the protocol is the same).
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<Config>,
    core: mpsc::Sender<Msg>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let per_ip = Arc::new(PerIp::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: keep serving the
                // connections we have, try again shortly.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = per_ip.take(peer.ip(), cfg.max_client_cnxns) else {
            log::warn!(
                "too many connections from {} - max is {}",
                peer.ip(),
                cfg.max_client_cnxns
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let cfg = cfg.clone();
        let core = core.clone();
        // Plain and TLS connections are separate tasks: a task is allocated
        // at the size of its future's largest state, and with the handshake
        // in the same future every plain session's task took 2,688 bytes
        // instead of 888.
        match tls.clone() {
            None => {
                tokio::spawn(async move {
                    let socket = stream.as_raw_fd();
                    let (rd, wr) = stream.into_split();
                    connection(rd, wr, Some(socket), peer, cfg, core).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match hs.await {
                        Ok(Ok(s)) => {
                            let (rd, wr) = tokio::io::split(s);
                            connection(rd, wr, None, peer, cfg, core).await;
                        }
                        Ok(Err(e)) => log::info!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::info!("TLS handshake with {peer} timed out"),
                    }
                    drop(slot);
                });
            }
        }
    }
}

async fn read_frame<R: WaitReadable>(
    rd: &mut Frames<R>,
    head: [u8; 4],
    max: usize,
) -> Result<Vec<u8>, String> {
    let len = check_len(head, max).map_err(|e| e.to_string())?;
    rd.body(len).await.map_err(|e| e.to_string())
}

/// `socket`: the plain TCP descriptor behind `wr`, for replies sent
/// straight from the storage thread (see `outbox`).
async fn connection<R, W>(
    rd: R,
    mut wr: W,
    socket: Option<RawFd>,
    peer: SocketAddr,
    cfg: Arc<Config>,
    core: mpsc::Sender<Msg>,
) where
    R: WaitReadable,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut rd = Frames::new(rd);
    let Ok(head) = rd.head().await else {
        return;
    };
    if let Some(word) = four_letter_word(head) {
        let text = if cfg.four_letter_word_allowed(word) {
            let (tx, rx) = oneshot::channel();
            if core
                .send(Msg::FourLetter { word, reply: tx })
                .await
                .is_err()
            {
                return;
            }
            rx.await.unwrap_or_default()
        } else {
            format!("{word} is not executed because it is not in the whitelist.\n")
        };
        let _ = wr.write_all(text.as_bytes()).await;
        let _ = wr.shutdown().await;
        return;
    }
    let body = match read_frame(&mut rd, head, cfg.frame_bytes_max).await {
        Ok(b) => b,
        Err(e) => {
            log::info!("closing connection from {peer}: {e}");
            return;
        }
    };
    let req = match ConnectRequest::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            log::info!("closing connection from {peer}: bad connect request: {e}");
            return;
        }
    };
    let conn = next_conn_id();
    let (outbox, gauge, out_rx) = Outbox::with_socket(socket);
    let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
    let ends = WriteEnds { rx: out_rx, wr };
    tokio::spawn(writer(ends, gauge.clone(), closed_tx));
    let throttle_at = cfg.connection_output_bytes_max / 2;
    let ip = peer.ip().to_canonical().to_string();
    if core
        .send(Msg::Connect {
            conn,
            ip,
            port: peer.port(),
            req,
            out: outbox,
        })
        .await
        .is_err()
    {
        return;
    }
    loop {
        // A client that does not read its replies stops being read from,
        // and so does one with too many requests unanswered.
        tokio::select! {
            _ = gauge.wait_below(throttle_at) => {}
            _ = &mut closed_rx => break,
        }
        tokio::select! {
            _ = gauge.wait_requests_below(cfg.connection_outstanding_requests_max) => {}
            _ = &mut closed_rx => break,
        }
        let head = tokio::select! {
            r = rd.head() => match r {
                Ok(h) => h,
                Err(_) => break,
            },
            _ = &mut closed_rx => break,
        };
        match read_frame(&mut rd, head, cfg.frame_bytes_max).await {
            Ok(body) => {
                gauge.request_read();
                if core.send(Msg::Packet { conn, body }).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                log::info!("closing connection 0x{conn:x} from {peer}: {e}");
                break;
            }
        }
    }
    let _ = core.send(Msg::Closed { conn }).await;
}

/// A frame at least this big is written on its own, not copied into the
/// writer's buffer with the frames queued around it: with 8 connections of
/// 8 getChildren each of a node with 10,000 children (~150 KB replies),
/// that copy was about a third of zkd's CPU time (perf), the buffer growing
/// to megabytes and shrinking after every write.
const WRITE_ALONE: usize = 64 * 1024;

/// Writes `parts` in order, in as few calls as the socket takes them.
async fn write_parts<W: AsyncWrite + Unpin>(wr: &mut W, parts: [&[u8]; 4]) -> std::io::Result<()> {
    let mut parts = parts;
    let mut i = 0;
    loop {
        while i < parts.len() && parts[i].is_empty() {
            i += 1;
        }
        if i == parts.len() {
            return Ok(());
        }
        let slices = parts.map(std::io::IoSlice::new);
        let mut n = wr.write_vectored(&slices[i..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let take = n.min(parts[i].len());
            parts[i] = &parts[i][take..];
            n -= take;
            if parts[i].is_empty() {
                i += 1;
            }
        }
    }
}

/// The writer's queue and its half of the socket, in this order: fields
/// drop in declaration order, so however the writer ends (or is dropped
/// unstarted at shutdown) the `Inbox` stops direct sends before the socket
/// can close and its number be reused.
struct WriteEnds<W> {
    rx: Inbox,
    wr: W,
}

async fn writer<W: AsyncWrite + Unpin>(
    mut ends: WriteEnds<W>,
    gauge: Gauge,
    closed: oneshot::Sender<()>,
) {
    // Used in place, not taken apart (two locals would drop in the reverse
    // order, the socket first).
    let WriteEnds { rx, wr } = &mut ends;
    // Grows with what is queued, and gives back a big burst's memory.
    let mut buf: Vec<u8> = Vec::new();
    let mut closing = false;
    // Taken off the queue but not yet in `buf` (it was full).
    let mut pending: Option<Out> = None;
    loop {
        let first = match pending.take() {
            Some(o) => o,
            None => match rx.recv().await {
                Some(o) => o,
                None => break,
            },
        };
        let mut next = Some(first);
        let mut failed = false;
        // Coalesce whatever is queued into one write; a frame alone (one
        // request's reply) or a big one goes out as it is, not copied.
        while let Some(o) = next.take() {
            match o {
                Out::Frame(b) => {
                    let more = rx.try_recv();
                    if b.len() >= WRITE_ALONE || (buf.is_empty() && more.is_none()) {
                        // What was coalesced before it goes first, in the
                        // same call.
                        let [x, y, z] = b.parts();
                        failed = write_parts(wr, [&buf[..], x, y, z]).await.is_err();
                        gauge.written(buf.len() + b.len());
                        buf.clear();
                        buf.shrink_to(64 * 1024);
                        pending = more;
                        break;
                    }
                    for part in b.parts() {
                        buf.extend_from_slice(part);
                    }
                    if buf.len() > 1 << 20 {
                        pending = more;
                        break;
                    }
                    next = more;
                }
                Out::Close => {
                    closing = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
        if !buf.is_empty() {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
            gauge.written(buf.len());
            buf.clear();
            buf.shrink_to(64 * 1024);
        }
        if closing {
            break;
        }
    }
    let _ = wr.shutdown().await;
    let _ = closed.send(());
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use zkd_core::out_frame::OutFrame;

    /// Small frames queued together are coalesced and big ones written on
    /// their own, whole or around a shared body, the bytes reaching the
    /// socket in queue order either way.
    #[tokio::test]
    async fn writer_keeps_queue_order_around_big_frames() {
        let (outbox, gauge, inbox) = Outbox::new();
        let shared = |head: u8, body: usize, tail: u8| OutFrame::Shared {
            head: vec![head; 20],
            body: std::sync::Arc::from(vec![head + 1; body]),
            tail: vec![tail; 5],
        };
        let frames = [
            OutFrame::from(vec![1; 10]),
            OutFrame::from(vec![2; WRITE_ALONE + 5]),
            OutFrame::from(vec![3; 7]),
            shared(4, 30, 6),
            OutFrame::from(vec![7; 9]),
            OutFrame::from(vec![8; WRITE_ALONE]),
            OutFrame::from(vec![9; 3]),
            shared(10, WRITE_ALONE, 12),
            shared(13, 1, 15),
        ];
        // All queued before the writer starts, so it meets them together.
        for f in &frames {
            outbox.push(f.clone());
        }
        outbox.close();
        // A small pipe: the socket takes part of a write at a time.
        let (mut client, server) = tokio::io::duplex(1000);
        let (closed, ended) = oneshot::channel();
        let ends = WriteEnds {
            rx: inbox,
            wr: server,
        };
        tokio::spawn(writer(ends, gauge, closed));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        ended.await.unwrap();
        let frames: Vec<Vec<u8>> = frames.into_iter().map(OutFrame::into_vec).collect();
        assert_eq!(got, frames.concat());
    }
}
