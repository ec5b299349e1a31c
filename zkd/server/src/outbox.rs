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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// What the core tells a connection's writer.
pub enum Out {
    Frame(Vec<u8>),
    Close,
}

/// Everything a connection's core side, reader and writer share, in one
/// allocation. A tokio unbounded channel plus four `Arc`s cost ~1.4 KB per
/// connection before anything was sent (the channel allocates its first
/// 32-slot block and a cache-padded header up front); a queue that holds
/// nothing while idle costs nothing per idle session.
struct Shared {
    queue: Mutex<Queue>,
    /// The writer has something to look at (stored as a permit if the
    /// writer is busy, so no push is missed).
    ready: Notify,
    queued: AtomicUsize,
    drained: Notify,
    requests: AtomicUsize,
    answered: Notify,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Out>,
    /// The core dropped its `Outbox`: after what is queued, the writer ends.
    ended: bool,
    /// The writer is gone: nothing pushed will be written.
    gone: bool,
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

impl Outbox {
    pub fn new() -> (Outbox, Gauge, Inbox) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            queued: AtomicUsize::new(0),
            drained: Notify::new(),
            requests: AtomicUsize::new(0),
            answered: Notify::new(),
        });
        (Outbox(shared.clone()), Gauge(shared.clone()), Inbox(shared))
    }

    /// Queues a frame; returns the bytes now waiting.
    pub fn push(&self, frame: Vec<u8>) -> usize {
        let s = &self.0;
        let n = frame.len();
        // Everything but a watch notification (xid -1) answers a request.
        if frame.get(4..8) != Some(&[0xff, 0xff, 0xff, 0xff][..]) {
            let _ = s
                .requests
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1));
            s.answered.notify_waiters();
        }
        let now = s.queued.fetch_add(n, Ordering::AcqRel) + n;
        if !self.send(Out::Frame(frame)) {
            s.queued.fetch_sub(n, Ordering::AcqRel);
        }
        now
    }

    pub fn close(&self) {
        self.send(Out::Close);
    }

    /// Requests of this connection read and not yet answered.
    pub fn requests(&self) -> usize {
        self.0.requests.load(Ordering::Acquire)
    }

    fn send(&self, out: Out) -> bool {
        let mut q = self.0.queue.lock().expect("outbox lock");
        if q.gone {
            return false;
        }
        q.items.push_back(out);
        drop(q);
        self.0.ready.notify_one();
        true
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.0.queue.lock().expect("outbox lock").ended = true;
        self.0.ready.notify_one();
    }
}

impl Inbox {
    /// The next item; `None` once the core has dropped its `Outbox` and
    /// everything queued before that was taken.
    pub async fn recv(&mut self) -> Option<Out> {
        loop {
            {
                let mut q = self.0.queue.lock().expect("outbox lock");
                if let Some(o) = q.items.pop_front() {
                    return Some(o);
                }
                if q.ended {
                    return None;
                }
                // A burst's slots are given back once it is written.
                if q.items.capacity() > 64 {
                    q.items = VecDeque::new();
                }
            }
            self.0.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<Out> {
        self.0.queue.lock().expect("outbox lock").items.pop_front()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().expect("outbox lock");
        q.gone = true;
        q.items = VecDeque::new();
    }
}

impl Gauge {
    /// The writer wrote `n` bytes.
    pub fn written(&self, n: usize) {
        self.0.queued.fetch_sub(n, Ordering::AcqRel);
        self.0.drained.notify_waiters();
    }

    pub fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Acquire)
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
    async fn a_waiting_writer_wakes_for_each_push_and_for_the_end() {
        let (out, _gauge, mut inbox) = Outbox::new();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            while let Some(o) = inbox.recv().await {
                let _ = seen_tx.send(len_of(Some(o)).unwrap());
            }
        });
        let wait = std::time::Duration::from_secs(10);
        for i in 0..20 {
            // The writer is asleep in `recv` (nothing queued): the push
            // alone must wake it.
            tokio::task::yield_now().await;
            out.push(frame(i, 8 + i as usize));
            let got = tokio::time::timeout(wait, seen.recv()).await;
            assert_eq!(got.expect("the push woke the writer"), Some(8 + i as usize));
        }
        drop(out);
        tokio::time::timeout(wait, writer)
            .await
            .expect("the writer saw the end")
            .unwrap();
    }

    #[tokio::test]
    async fn with_the_writer_gone_nothing_is_kept() {
        let (out, gauge, inbox) = Outbox::new();
        out.push(frame(1, 10));
        drop(inbox);
        out.push(frame(2, 50));
        assert_eq!(
            gauge.queued(),
            10,
            "a frame nobody will write is not counted"
        );
        assert!(out.0.queue.lock().unwrap().items.is_empty());
    }

    #[tokio::test]
    async fn an_idle_writer_gives_back_a_bursts_slots() {
        let (out, _gauge, mut inbox) = Outbox::new();
        for i in 0..1000 {
            out.push(frame(i, 8));
        }
        for _ in 0..1000 {
            assert!(inbox.recv().await.is_some());
        }
        let idle = tokio::time::timeout(std::time::Duration::from_millis(50), inbox.recv()).await;
        assert!(idle.is_err(), "nothing was queued");
        assert!(out.0.queue.lock().unwrap().items.capacity() <= 64);
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
