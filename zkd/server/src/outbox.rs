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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

/// What the core tells a connection's writer.
pub enum Out {
    Frame(Vec<u8>),
    Close,
}

/// The sending side, held by the core only: when the core drops it the
/// writer's queue ends and the connection closes.
pub struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    gauge: Gauge,
}

/// The bytes waiting, shared by the core (adds), the writer (subtracts) and
/// the reader (waits for it to fall). Holds no sender, so it keeps nothing open.
#[derive(Clone)]
pub struct Gauge {
    queued: Arc<AtomicUsize>,
    drained: Arc<Notify>,
    requests: Arc<AtomicUsize>,
    answered: Arc<Notify>,
}

impl Outbox {
    pub fn new() -> (Outbox, Gauge, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauge = Gauge {
            queued: Arc::new(AtomicUsize::new(0)),
            drained: Arc::new(Notify::new()),
            requests: Arc::new(AtomicUsize::new(0)),
            answered: Arc::new(Notify::new()),
        };
        (
            Outbox {
                tx,
                gauge: gauge.clone(),
            },
            gauge,
            rx,
        )
    }

    /// Queues a frame; returns the bytes now waiting.
    pub fn push(&self, frame: Vec<u8>) -> usize {
        let n = frame.len();
        // Everything but a watch notification (xid -1) answers a request.
        if frame.get(4..8) != Some(&[0xff, 0xff, 0xff, 0xff][..]) {
            let _ = self
                .gauge
                .requests
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1));
            self.gauge.answered.notify_waiters();
        }
        let now = self.gauge.queued.fetch_add(n, Ordering::AcqRel) + n;
        if self.tx.send(Out::Frame(frame)).is_err() {
            self.gauge.queued.fetch_sub(n, Ordering::AcqRel);
        }
        now
    }

    pub fn close(&self) {
        let _ = self.tx.send(Out::Close);
    }

    /// Requests of this connection read and not yet answered.
    pub fn requests(&self) -> usize {
        self.gauge.requests.load(Ordering::Acquire)
    }
}

impl Gauge {
    /// The writer wrote `n` bytes.
    pub fn written(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The reader took a request off the socket.
    pub fn request_read(&self) {
        self.requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits until fewer than `limit` requests are unanswered.
    pub async fn wait_requests_below(&self, limit: usize) {
        loop {
            let notified = self.answered.notified();
            if self.requests.load(Ordering::Acquire) < limit {
                return;
            }
            notified.await;
        }
    }

    /// Waits until at most `limit` bytes are waiting.
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let notified = self.drained.notified();
            if self.queued() <= limit {
                return;
            }
            notified.await;
        }
    }
}
