//! A connection's outgoing queue, and the limit on it.
//!
//! Replies and watch events are queued here by the core and written by the
//! connection's writer task. The bytes waiting are counted so that a client
//! that stops reading cannot make the server hold memory without bound:
//! above half of `connectionOutputBytesMax` the connection's reader stops
//! taking new requests (the client is throttled); above the whole of it (only
//! reachable through watch events and replies already in flight) the
//! connection is closed.

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
}

impl Outbox {
    pub fn new() -> (Outbox, Gauge, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauge = Gauge {
            queued: Arc::new(AtomicUsize::new(0)),
            drained: Arc::new(Notify::new()),
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
        let now = self.gauge.queued.fetch_add(n, Ordering::AcqRel) + n;
        if self.tx.send(Out::Frame(frame)).is_err() {
            self.gauge.queued.fetch_sub(n, Ordering::AcqRel);
        }
        now
    }

    pub fn close(&self) {
        let _ = self.tx.send(Out::Close);
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
