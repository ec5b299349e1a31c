//! A connection's outgoing queue, and the limit on it.
//!
//! Replies and watch events are queued here by the core and written by the
//! connection's writer task. The bytes waiting are counted so that a client
//! that stops reading cannot make the server hold memory without bound:
//! above half of `connectionOutputBytesMax` the connection's reader stops
//! taking new requests (the client is throttled); above the whole of it (only
//! reachable through watch events and replies already in flight) the
//! connection is closed.
//!
//! It also counts the connection's requests in flight (read from the
//! socket, not yet answered): at `connectionOutstandingRequestsMax` the
//! reader stops reading until a reply goes out, so one session cannot queue
//! unbounded work in the core (watch notifications are not answers and do
//! not count).
//!
//! A reply to a connection whose writer is idle can be sent straight from
//! the thread that made it (`Replier::push_now`): a lone write's reply then
//! leaves the storage thread right after its sync, without waking a tokio
//! worker first (measured: see `runtime`'s `DIRECT_MAX`).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use zkd_core::out_frame::OutFrame;

pub use crate::sendq::Out;
use crate::sendq::SendQueue;

/// Everything a connection's core side, reader and writer share, in one
/// allocation. A tokio unbounded channel plus four `Arc`s cost ~1.4 KB per
/// connection before anything was sent (the channel allocates its first
/// 32-slot block and a cache-padded header up front); a queue that holds
/// nothing while idle costs nothing per idle session.
struct Shared {
    queue: SendQueue,
    drained: Notify,
    requests: AtomicUsize,
    answered: Notify,
}

/// The sending side, held by the core only: when the core drops it the
/// writer's queue ends and the connection closes.
pub struct Outbox(Arc<Shared>);

/// The bytes waiting, shared by the core (adds), the writer (subtracts) and
/// the reader (waits for it to fall). It does not keep the queue open.
#[derive(Clone)]
pub struct Gauge(Arc<Shared>);

/// The writer's side of the queue.
pub struct Inbox(Arc<Shared>);

/// Another thread's way to answer on the connection (the storage thread,
/// after the sync a reply waited for). Unlike the `Outbox` it does not end
/// the connection when dropped.
#[derive(Clone)]
pub struct Replier(Arc<Shared>);

impl Outbox {
    #[cfg(test)]
    pub fn new() -> (Outbox, Gauge, Inbox) {
        Self::with_socket(None)
    }

    /// `socket`: the connection's descriptor, for `Replier::push_now`. The
    /// caller guarantees it stays open until the `Inbox` is dropped (the
    /// writer drops its `Inbox` before its half of the socket).
    pub fn with_socket(socket: Option<RawFd>) -> (Outbox, Gauge, Inbox) {
        let shared = Arc::new(Shared {
            queue: SendQueue::new(socket),
            drained: Notify::new(),
            requests: AtomicUsize::new(0),
            answered: Notify::new(),
        });
        (Outbox(shared.clone()), Gauge(shared.clone()), Inbox(shared))
    }

    /// Queues a frame; returns the bytes now waiting.
    pub fn push(&self, frame: impl Into<OutFrame>) -> usize {
        self.0.push(frame.into(), false)
    }

    pub fn close(&self) {
        self.0.queue.push_close();
    }

    /// Requests of this connection read and not yet answered.
    pub fn requests(&self) -> usize {
        self.0.requests.load(Ordering::Acquire)
    }

    pub fn replier(&self) -> Replier {
        Replier(self.0.clone())
    }
}

impl Replier {
    /// Sends the frame on the socket now if the writer is idle with nothing
    /// queued and the socket takes it all; otherwise queues it (the rest of
    /// it, if the socket took part) for the writer. Returns the bytes still
    /// waiting.
    pub fn push_now(&self, frame: impl Into<OutFrame>) -> usize {
        self.0.push(frame.into(), true)
    }

    pub fn close(&self) {
        self.0.queue.push_close();
    }
}

impl Shared {
    fn push(&self, frame: OutFrame, now: bool) -> usize {
        // Everything but a watch notification (xid -1) answers a request.
        if frame.head().get(4..8) != Some(&[0xff, 0xff, 0xff, 0xff][..]) {
            let _ = self
                .requests
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1));
            self.answered.notify_waiters();
        }
        self.queue.push(frame, now)
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // From now on everything goes through the writer, which ends after
        // what is queued.
        self.0.queue.end();
    }
}

impl Inbox {
    /// The next item; `None` once the core has dropped its `Outbox` and
    /// everything queued before that was taken.
    pub async fn recv(&mut self) -> Option<Out> {
        self.0.queue.recv().await
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<Out> {
        self.0.queue.try_recv()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.0.queue.writer_gone();
    }
}

impl Gauge {
    /// The writer wrote `n` bytes.
    pub fn written(&self, n: usize) {
        self.0.queue.written(n);
        self.0.drained.notify_waiters();
    }

    pub fn queued(&self) -> usize {
        self.0.queue.queued()
    }

    /// The reader took a request off the socket.
    pub fn request_read(&self) {
        self.0.requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits until fewer than `limit` requests are unanswered.
    pub async fn wait_requests_below(&self, limit: usize) {
        loop {
            let notified = self.0.answered.notified();
            if self.0.requests.load(Ordering::Acquire) < limit {
                return;
            }
            notified.await;
        }
    }

    /// Waits until at most `limit` bytes are waiting.
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let notified = self.0.drained.notified();
            if self.queued() <= limit {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    // The queue itself (order, direct sends, wake-ups) is tested in
    // `sendq`; these test what the outbox adds and how its ends use it.
    use super::*;

    fn frame(xid: i32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(8)];
        f[4..8].copy_from_slice(&xid.to_be_bytes());
        f
    }

    fn len_of(o: Option<Out>) -> Option<usize> {
        match o {
            Some(Out::Frame(f)) => Some(f.len()),
            Some(Out::Close) => Some(0),
            None => None,
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_then_close_then_the_end() {
        let (out, gauge, mut inbox) = Outbox::new();
        assert_eq!(out.push(frame(1, 10)), 10);
        assert_eq!(out.push(frame(2, 20)), 30);
        out.close();
        drop(out);
        assert_eq!(gauge.queued(), 30);
        assert_eq!(len_of(inbox.recv().await), Some(10));
        assert_eq!(len_of(inbox.try_recv()), Some(20));
        assert_eq!(
            len_of(inbox.recv().await),
            Some(0),
            "Close after the frames"
        );
        assert_eq!(
            len_of(inbox.recv().await),
            None,
            "the core dropped its side"
        );
    }

    #[tokio::test]
    async fn only_a_repliers_push_now_goes_straight_out_and_only_while_the_writer_lives() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let mut got = [0u8; 64];
        let (out, gauge, mut inbox) = Outbox::with_socket(Some(ours.as_raw_fd()));
        let replier = out.replier();
        assert_eq!(out.push(frame(1, 12)), 12, "the core's push is queued");
        assert!(peer.read(&mut got).is_err());
        assert_eq!(len_of(inbox.recv().await), Some(12));
        gauge.written(12);
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), inbox.recv()).await;
        assert!(idle.is_err(), "nothing was queued");
        assert_eq!(replier.push_now(frame(2, 16)), 0);
        assert_eq!(peer.read(&mut got).unwrap(), 16, "sent, not queued");
        // Once the writer is gone nothing is kept, counted or sent.
        drop(inbox);
        assert_eq!(replier.push_now(frame(3, 50)), 0);
        assert_eq!(out.push(frame(4, 50)), 0);
        assert!(peer.read(&mut got).is_err());
    }

    #[tokio::test]
    async fn the_gauge_wakes_a_throttled_reader_when_the_writer_catches_up() {
        let (out, gauge, mut inbox) = Outbox::new();
        out.push(frame(1, 100));
        let waiter = gauge.clone();
        let reader = tokio::spawn(async move { waiter.wait_below(10).await });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "100 bytes wait");
        assert_eq!(len_of(inbox.recv().await), Some(100));
        gauge.written(100);
        tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("the written bytes woke the reader")
            .unwrap();
    }

    #[test]
    fn answers_count_down_requests_and_events_do_not() {
        let (out, gauge, _inbox) = Outbox::new();
        gauge.request_read();
        gauge.request_read();
        out.push(frame(-1, 8));
        assert_eq!(out.requests(), 2);
        out.push(frame(7, 8));
        assert_eq!(out.requests(), 1);
    }
}
