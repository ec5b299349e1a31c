//! The client port: accepts connections, splits them into frames, and moves
//! bytes between sockets and the core. Nothing here decides anything about
//! the tree; it enforces only what belongs to the socket: `jute.maxbuffer`,
//! `maxClientCnxns` per address, and four-letter words on a connection's
//! first bytes.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use zk_proto::frame::{check_len, four_letter_word};
use zk_proto::records::{ConnectRequest, Record};
use zkd_core::out_frame::OutFrame;

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

/// Writes `slices` in order, in as few calls as the socket takes them.
async fn write_slices<W: AsyncWrite + Unpin>(
    wr: &mut W,
    slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    let mut rest = slices;
    // Drops empty slices in front (a frame with no head).
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = wr.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// A frame's part at least this big (a big getData reply's data, a big
/// parent's cached child list, any big reply) goes to the socket from where
/// it is, as an iovec of its own, instead of being copied into the
/// writer's buffer with the small frames around it. With 8 connections of
/// 8 getChildren each of a node with 10,000 children (~150 KB replies),
/// that copy was about a third of zkd's CPU time (perf), the buffer growing
/// to megabytes and shrinking after every write; under a 3-member
/// ensemble's 16x32 mix of 10 KiB data, 2% of the machine's.
const COPY_MAX: usize = 1024;

/// A write carries at most this many uncopied parts (each an iovec, and
/// the copied bytes between them another; Linux takes 1024 per call)...
const PARTS_PER_WRITE: usize = 256;

/// ...and stops taking frames once it holds this many bytes.
const BYTES_PER_WRITE: usize = 1 << 20;

/// What one write sends, in queue order: small frames and the small parts
/// of big ones copied into `buf`, and big parts between them as they are.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    /// Each big part, after the first `.0` bytes of `buf`.
    parts: Vec<(usize, Bytes)>,
    /// The big parts' bytes.
    parts_len: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.parts.is_empty()
    }

    fn len(&self) -> usize {
        self.buf.len() + self.parts_len
    }

    fn push(&mut self, f: OutFrame) {
        match f {
            OutFrame::Whole(b) if b.len() >= COPY_MAX => {
                self.parts_len += b.len();
                self.parts.push((self.buf.len(), Bytes::from(b)));
            }
            OutFrame::Whole(b) => self.buf.extend_from_slice(&b),
            OutFrame::Shared { head, body, tail } => {
                self.buf.extend_from_slice(&head);
                if body.len() >= COPY_MAX {
                    self.parts_len += body.len();
                    self.parts.push((self.buf.len(), body));
                } else {
                    self.buf.extend_from_slice(&body);
                }
                self.buf.extend_from_slice(&tail);
            }
        }
    }

    fn full(&self) -> bool {
        self.len() >= BYTES_PER_WRITE || self.parts.len() >= PARTS_PER_WRITE
    }

    /// Writes it all, in as few calls as the socket takes it.
    async fn write_to<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> std::io::Result<()> {
        if self.parts.is_empty() {
            return wr.write_all(&self.buf).await;
        }
        if !wr.is_write_vectored() {
            // One slice per call (TLS): copy the big parts in after all.
            for (at, part) in self.parts.drain(..).rev() {
                self.buf.splice(at..at, part.iter().copied());
            }
            return wr.write_all(&self.buf).await;
        }
        let mut slices = Vec::with_capacity(2 * self.parts.len() + 1);
        let mut from = 0;
        for (at, part) in &self.parts {
            if *at > from {
                slices.push(IoSlice::new(&self.buf[from..*at]));
            }
            slices.push(IoSlice::new(part));
            from = *at;
        }
        if from < self.buf.len() {
            slices.push(IoSlice::new(&self.buf[from..]));
        }
        write_slices(wr, &mut slices).await
    }

    fn clear(&mut self) {
        self.buf.clear();
        // Gives back a big burst's memory.
        self.buf.shrink_to(64 * 1024);
        self.parts.clear();
        self.parts_len = 0;
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
    let mut batch = Batch::default();
    let mut closing = false;
    // Taken off the queue but not yet in `batch` (it was full).
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
        // Whatever is queued goes out in one write; a frame alone (one
        // request's reply) as it is.
        while let Some(o) = next.take() {
            match o {
                Out::Frame(f) => {
                    let more = rx.try_recv();
                    if batch.is_empty() && more.is_none() {
                        failed = write_slices(wr, &mut f.parts().map(IoSlice::new))
                            .await
                            .is_err();
                        gauge.written(f.len());
                        break;
                    }
                    batch.push(f);
                    if batch.full() {
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
        if !batch.is_empty() {
            let written = batch.len();
            if batch.write_to(wr).await.is_err() {
                break;
            }
            gauge.written(written);
            batch.clear();
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
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Frames of every kind: small, big whole, shared with a small or a
    /// big body.
    fn frames() -> Vec<OutFrame> {
        let shared = |head: u8, body: usize, tail: u8| OutFrame::Shared {
            head: vec![head; 20],
            body: Bytes::from(vec![head + 1; body]),
            tail: vec![tail; 5],
        };
        vec![
            OutFrame::from(vec![1; 10]),
            OutFrame::from(vec![2; COPY_MAX + 5]),
            OutFrame::from(vec![3; 7]),
            shared(4, 30, 6),
            OutFrame::from(vec![7; 9]),
            OutFrame::from(vec![8; COPY_MAX]),
            OutFrame::from(vec![9; 3]),
            shared(10, COPY_MAX, 12),
            shared(13, 1, 15),
            shared(16, 3 * COPY_MAX, 18),
            shared(19, COPY_MAX - 1, 21),
        ]
    }

    /// Runs the writer over `frames`, all queued before it starts (so it
    /// meets them together), into `wr`.
    async fn write_all_queued<W: AsyncWrite + Unpin + Send + 'static>(frames: &[OutFrame], wr: W) {
        let (outbox, gauge, inbox) = Outbox::new();
        for f in frames {
            outbox.push(f.clone());
        }
        outbox.close();
        let (closed, ended) = oneshot::channel();
        tokio::spawn(writer(WriteEnds { rx: inbox, wr }, gauge, closed));
        ended.await.unwrap();
    }

    fn concat(frames: Vec<OutFrame>) -> Vec<u8> {
        frames.into_iter().flat_map(OutFrame::into_vec).collect()
    }

    /// A socket that takes at most `per_call` bytes each time, in vectored
    /// writes if `vectored`, and records how many slices each call was
    /// given.
    struct Trickle {
        per_call: usize,
        vectored: bool,
        got: std::sync::Arc<Mutex<(Vec<u8>, Vec<usize>)>>,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = b.len().min(self.per_call);
            let mut got = self.got.lock().unwrap();
            got.0.extend_from_slice(&b[..n]);
            got.1.push(1);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut got = self.got.lock().unwrap();
            got.1.push(bufs.len());
            let mut left = self.per_call;
            for b in bufs {
                let n = b.len().min(left);
                got.0.extend_from_slice(&b[..n]);
                left -= n;
            }
            Poll::Ready(Ok(self.per_call - left))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The writer's bytes for `frames()` through a `Trickle`, and the
    /// slices of each call.
    async fn trickle(per_call: usize, vectored: bool) -> (Vec<u8>, Vec<usize>) {
        let got = std::sync::Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let wr = Trickle {
            per_call,
            vectored,
            got: got.clone(),
        };
        write_all_queued(&frames(), wr).await;
        let taken = std::mem::take(&mut *got.lock().unwrap());
        taken
    }

    /// Frames queued together go out in one vectored write, big parts as
    /// slices of their own between the copied small ones, and the bytes
    /// reach the socket in queue order however little it takes per call.
    #[tokio::test]
    async fn writer_sends_queued_frames_in_order_big_parts_uncopied() {
        for per_call in [1, 7, 1000, 1 << 20] {
            let (bytes, calls) = trickle(per_call, true).await;
            assert_eq!(bytes, concat(frames()), "{per_call} bytes per call");
            // Four big parts, each between copied bytes: nine slices.
            assert_eq!(calls[0], 9, "{per_call} bytes per call");
        }
    }

    /// A socket that takes one slice per call (TLS) gets the same bytes.
    #[tokio::test]
    async fn writer_keeps_queue_order_without_vectored_writes() {
        for per_call in [1, 1000] {
            let (bytes, calls) = trickle(per_call, false).await;
            assert_eq!(bytes, concat(frames()), "{per_call} bytes per call");
            assert!(calls.iter().all(|&n| n == 1));
        }
    }
}
