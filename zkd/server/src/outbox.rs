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

use std::collections::VecDeque;
use std::os::fd::RawFd;
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
    /// The writer took something and has not come back for more: a frame
    /// sent now would overtake it.
    busy: bool,
    /// A plain TCP connection's socket, open while `gone` is false (the
    /// writer holds it); `None` for TLS (the bytes must go through the
    /// session).
    socket: Option<RawFd>,
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
            queue: Mutex::new(Queue {
                socket,
                ..Queue::default()
            }),
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
        self.0.push(frame, false)
    }

    pub fn close(&self) {
        self.0.send(Out::Close);
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
    pub fn push_now(&self, frame: Vec<u8>) -> usize {
        self.0.push(frame, true)
    }

    pub fn close(&self) {
        self.0.send(Out::Close);
    }
}

impl Shared {
    fn push(&self, frame: Vec<u8>, now: bool) -> usize {
        // Everything but a watch notification (xid -1) answers a request.
        if frame.get(4..8) != Some(&[0xff, 0xff, 0xff, 0xff][..]) {
            let _ = self
                .requests
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1));
            self.answered.notify_waiters();
        }
        let mut q = self.queue.lock().expect("outbox lock");
        if q.gone {
            return self.queued.load(Ordering::Acquire);
        }
        let mut frame = frame;
        if now && !q.busy && !q.ended && q.items.is_empty() {
            if let Some(fd) = q.socket {
                let sent = send_some(fd, &frame);
                if sent == frame.len() {
                    return self.queued.load(Ordering::Acquire);
                }
                frame.drain(..sent);
            }
        }
        let waiting = self.queued.fetch_add(frame.len(), Ordering::AcqRel) + frame.len();
        q.items.push_back(Out::Frame(frame));
        drop(q);
        self.ready.notify_one();
        waiting
    }

    fn send(&self, out: Out) -> bool {
        let mut q = self.queue.lock().expect("outbox lock");
        if q.gone {
            return false;
        }
        q.items.push_back(out);
        drop(q);
        self.ready.notify_one();
        true
    }
}

/// What of `bytes` the socket takes without blocking; 0 on any error (the
/// writer, trying the same, meets it and ends the connection).
pub(crate) fn send_some(fd: RawFd, bytes: &[u8]) -> usize {
    loop {
        // SAFETY: `fd` is open (see `Outbox::with_socket`) and `bytes` is a
        // valid slice for its length.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return n as usize;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return 0;
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // From now on everything goes through the writer, which ends after
        // what is queued.
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
                    q.busy = true;
                    return Some(o);
                }
                // Everything taken before is written.
                q.busy = false;
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

    /// A connected pair of sockets, one end for the outbox.
    fn pair() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn read_now(s: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        let mut buf = vec![0u8; 1 << 20];
        match s.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn an_idle_writers_frame_goes_straight_onto_the_socket() {
        use std::os::fd::AsRawFd;
        let (ours, mut peer) = pair();
        let (out, gauge, mut inbox) = Outbox::with_socket(Some(ours.as_raw_fd()));
        let replier = out.replier();
        assert_eq!(replier.push_now(frame(1, 12)), 0);
        assert_eq!(read_now(&mut peer).len(), 12, "sent, not queued");
        assert_eq!(gauge.queued(), 0);
        assert!(inbox.try_recv().is_none());
        // The writer takes a queued frame and has not come back: a frame
        // sent now would overtake it, so it queues behind.
        out.push(frame(2, 20));
        assert_eq!(len_of(inbox.recv().await), Some(20));
        assert_eq!(
            replier.push_now(frame(3, 30)),
            50,
            "20 not yet written + 30"
        );
        assert!(read_now(&mut peer).is_empty());
        assert_eq!(len_of(inbox.try_recv()), Some(30));
        gauge.written(50);
        // Back in `recv` with nothing queued: idle again.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), inbox.recv())
                .await
                .is_err()
        );
        assert_eq!(replier.push_now(frame(4, 40)), 0);
        assert_eq!(read_now(&mut peer).len(), 40);
        // Once the writer is gone the socket is not touched.
        drop(inbox);
        replier.push_now(frame(5, 50));
        assert!(read_now(&mut peer).is_empty());
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_is_queued_in_order() {
        use std::os::fd::AsRawFd;
        let (ours, mut peer) = pair();
        let (out, gauge, mut inbox) = Outbox::with_socket(Some(ours.as_raw_fd()));
        let big = 4 << 20;
        let mut f = frame(1, big);
        f[big - 1] = 7;
        let waiting = out.replier().push_now(f);
        assert!(
            waiting > 0 && waiting < big,
            "{waiting}: part sent, the rest queued"
        );
        assert_eq!(gauge.queued(), waiting);
        let rest = match inbox.recv().await {
            Some(Out::Frame(r)) => r,
            _ => panic!("the rest is queued"),
        };
        assert_eq!(rest.len(), waiting);
        assert_eq!(rest[waiting - 1], 7, "the tail, not the head");
        // Behind a queued remainder nothing is sent directly, even after
        // the peer has read: the writer has not finished the rest.
        let mut got = 0;
        while got < big - waiting {
            let n = read_now(&mut peer).len();
            assert!(n > 0, "the part sent is there to read");
            got += n;
        }
        out.replier().push_now(frame(2, 10));
        assert!(read_now(&mut peer).is_empty());
        assert_eq!(len_of(inbox.try_recv()), Some(10));
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
