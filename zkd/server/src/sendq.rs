//! A socket's send queue that another thread may also send on directly.
//!
//! Both kinds of outgoing connection use it: a client's (`outbox`, which
//! adds the byte and request limits) and a peer's (`ensemble::link`, which
//! attaches a new socket each time it redials). One side queues frames and
//! the connection's writer task takes and writes them. A thread that knows
//! something may go out *now* (the storage thread, right after the sync a
//! reply or an ack waited for) sends it straight onto the socket instead of
//! waking a tokio worker to queue it: one wake-up is ~20-35 µs on this VM,
//! and a lone write's path had about eight.
//!
//! Order on the connection: a direct send happens only while the writer
//! is idle with nothing queued (everything it took is written), under the
//! lock it takes frames with; otherwise the frame (or what the socket did
//! not take of it) is queued behind the others.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use zkd_core::out_frame::OutFrame;

/// What the writer is told.
pub enum Out {
    Frame(OutFrame),
    Close,
}

pub struct SendQueue {
    state: Mutex<State>,
    /// The writer has something to look at (stored as a permit if it is
    /// busy, so no push is missed).
    ready: Notify,
    /// Bytes queued and not yet written (the writer reports them).
    queued: AtomicUsize,
}

#[derive(Default)]
struct State {
    items: VecDeque<Out>,
    /// No more will be queued: after what is queued, the writer ends.
    ended: bool,
    /// The writer is gone: nothing pushed will be written.
    gone: bool,
    /// The writer took something and has not come back for more: a frame
    /// sent now would overtake it.
    busy: bool,
    /// The socket direct sends may write to; whoever set it keeps it open
    /// until it is unset (`set_socket(None)`) or the writer is gone.
    socket: Option<RawFd>,
}

impl SendQueue {
    pub fn new(socket: Option<RawFd>) -> SendQueue {
        SendQueue {
            state: Mutex::new(State {
                socket,
                ..State::default()
            }),
            ready: Notify::new(),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("send queue lock")
    }

    /// Queues a frame, or with `now` first sends it on the socket if the
    /// writer is idle with nothing queued; what the socket does not take is
    /// queued. Returns the bytes now waiting.
    pub fn push(&self, frame: impl Into<OutFrame>, now: bool) -> usize {
        let mut frame = frame.into();
        let mut s = self.lock();
        if s.gone {
            return self.queued();
        }
        let idle = now && !s.busy && !s.ended && s.items.is_empty();
        // A frame around a shared body (a big child list, big data) is the
        // writer's, which writes its parts in one call.
        if let (true, Some(fd), OutFrame::Whole(bytes)) = (idle, s.socket, &mut frame) {
            let sent = send_some(fd, bytes);
            if sent == bytes.len() {
                return self.queued();
            }
            bytes.drain(..sent);
        }
        // Counted before the writer can see it, so its `written` never
        // takes away bytes not yet added.
        let waiting = self.queued.fetch_add(frame.len(), Ordering::AcqRel) + frame.len();
        s.items.push_back(Out::Frame(frame));
        drop(s);
        self.ready.notify_one();
        waiting
    }

    /// Queues a close: the writer ends the connection when it gets there.
    pub fn push_close(&self) {
        let mut s = self.lock();
        if s.gone {
            return;
        }
        s.items.push_back(Out::Close);
        drop(s);
        self.ready.notify_one();
    }

    /// No more frames will be pushed; from now on nothing is sent directly.
    pub fn end(&self) {
        self.lock().ended = true;
        self.ready.notify_one();
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    // The writer's side.

    /// The next item; `None` once the queue ended and everything queued
    /// before was taken. Cancel-safe: an item is taken only when returned.
    pub async fn recv(&self) -> Option<Out> {
        loop {
            {
                let mut s = self.lock();
                if let Some(o) = s.items.pop_front() {
                    s.busy = true;
                    return Some(o);
                }
                // Everything taken before is written.
                s.busy = false;
                if s.ended {
                    return None;
                }
                // A burst's slots are given back once it is written.
                if s.items.capacity() > 64 {
                    s.items = VecDeque::new();
                }
            }
            self.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_recv(&self) -> Option<Out> {
        self.lock().items.pop_front()
    }

    /// The writer wrote `n` of the queued bytes.
    pub fn written(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    pub fn ended(&self) -> bool {
        self.lock().ended
    }

    /// The connection is down: what was queued is lost, and the writer is
    /// idle.
    pub fn discard(&self) {
        let mut s = self.lock();
        s.items = VecDeque::new();
        s.busy = false;
        self.queued.store(0, Ordering::Release);
    }

    /// Direct sends may write to `socket` from now on (`None`: no more).
    pub fn set_socket(&self, socket: Option<RawFd>) {
        self.lock().socket = socket;
    }

    /// The writer is gone for good: nothing queued or pushed is kept, and
    /// the socket is not touched again.
    pub fn writer_gone(&self) {
        let mut s = self.lock();
        s.gone = true;
        s.items = VecDeque::new();
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.lock().items.capacity()
    }
}

/// What of `bytes` the socket takes without blocking; 0 on any error (the
/// writer, trying the same, meets it and ends the connection).
fn send_some(fd: RawFd, bytes: &[u8]) -> usize {
    loop {
        // SAFETY: `fd` is open (see `State::socket`) and `bytes` is a
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn read_now(s: &mut UnixStream) -> Vec<u8> {
        s.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    fn frame(o: Option<Out>) -> Option<Vec<u8>> {
        match o {
            Some(Out::Frame(f)) => Some(f.into_vec()),
            _ => None,
        }
    }

    async fn idle(q: &SendQueue) {
        let next = tokio::time::timeout(std::time::Duration::from_millis(20), q.recv()).await;
        assert!(next.is_err(), "nothing was queued");
    }

    #[tokio::test]
    async fn a_direct_send_goes_out_only_while_the_writer_is_idle() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let q = SendQueue::new(None);
        // No socket: queued, not lost.
        assert_eq!(q.push(b"a".to_vec(), true), 1);
        q.set_socket(Some(ours.as_raw_fd()));
        // The writer has "a" and has not come back: "b" waits behind it.
        assert_eq!(frame(q.recv().await), Some(b"a".to_vec()));
        assert_eq!(q.push(b"bb".to_vec(), true), 3, "1 not yet written + 2");
        assert_eq!(read_now(&mut theirs), b"");
        assert_eq!(frame(q.try_recv()), Some(b"bb".to_vec()));
        q.written(3);
        // Back for more with nothing queued: idle, so "c" goes straight out.
        idle(&q).await;
        assert_eq!(q.push(b"c".to_vec(), true), 0);
        assert_eq!(read_now(&mut theirs), b"c");
        // A queued frame is never overtaken by a direct one.
        q.push(b"d".to_vec(), false);
        q.push(b"e".to_vec(), true);
        assert_eq!(read_now(&mut theirs), b"");
        assert_eq!(frame(q.recv().await), Some(b"d".to_vec()));
        assert_eq!(frame(q.try_recv()), Some(b"e".to_vec()));
        // Unset: nothing touches the socket.
        idle(&q).await;
        q.set_socket(None);
        q.push(b"f".to_vec(), true);
        assert_eq!(read_now(&mut theirs), b"");
        assert!(!q.is_empty());
        q.discard();
        assert!(q.is_empty());
        assert_eq!(q.queued(), 0);
        // Ended: after what is queued, the end; and no direct sends.
        q.set_socket(Some(ours.as_raw_fd()));
        q.end();
        q.push(b"g".to_vec(), true);
        assert_eq!(read_now(&mut theirs), b"");
        assert_eq!(frame(q.recv().await), Some(b"g".to_vec()));
        assert!(q.recv().await.is_none());
        assert!(q.ended());
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_is_queued_in_order() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let q = SendQueue::new(Some(ours.as_raw_fd()));
        let big = 4 << 20;
        let mut f = vec![0u8; big];
        f[big - 1] = 7;
        let waiting = q.push(f, true);
        assert!(
            waiting > 0 && waiting < big,
            "{waiting}: part sent, the rest queued"
        );
        let rest = frame(q.recv().await).expect("the rest is queued");
        assert_eq!(rest.len(), waiting);
        assert_eq!(rest[waiting - 1], 7, "the tail, not the head");
        // Behind a queued remainder nothing is sent directly, even after
        // the peer has read: the writer has not finished the rest.
        assert_eq!(read_now(&mut theirs).len(), big - waiting);
        q.push(b"x".to_vec(), true);
        assert_eq!(read_now(&mut theirs), b"");
        assert_eq!(frame(q.try_recv()), Some(b"x".to_vec()));
    }

    #[tokio::test]
    async fn with_the_writer_gone_nothing_is_kept_or_sent() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let q = SendQueue::new(Some(ours.as_raw_fd()));
        q.push(b"0123456789".to_vec(), false);
        q.writer_gone();
        q.push(b"x".to_vec(), true);
        q.push_close();
        assert_eq!(q.queued(), 10, "a frame nobody will write is not counted");
        assert!(q.is_empty());
        assert_eq!(read_now(&mut theirs), b"");
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_each_push_and_for_the_end() {
        let q = std::sync::Arc::new(SendQueue::new(None));
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let w = q.clone();
        let writer = tokio::spawn(async move {
            while let Some(o) = w.recv().await {
                let _ = seen_tx.send(frame(Some(o)).map(|f| f.len()));
            }
        });
        let wait = std::time::Duration::from_secs(10);
        for i in 0..20 {
            // The writer is asleep in `recv` (nothing queued): the push
            // alone must wake it.
            tokio::task::yield_now().await;
            q.push(vec![0; i + 1], false);
            let got = tokio::time::timeout(wait, seen.recv()).await;
            assert_eq!(got.expect("the push woke the writer"), Some(Some(i + 1)));
        }
        q.push_close();
        let got = tokio::time::timeout(wait, seen.recv()).await;
        assert_eq!(got.expect("the close woke the writer"), Some(None));
        q.end();
        tokio::time::timeout(wait, writer)
            .await
            .expect("the writer saw the end")
            .unwrap();
    }

    #[tokio::test]
    async fn an_idle_writer_gives_back_a_bursts_slots() {
        let q = SendQueue::new(None);
        for _ in 0..1000 {
            q.push(vec![0; 8], false);
        }
        for _ in 0..1000 {
            assert!(q.recv().await.is_some());
        }
        idle(&q).await;
        assert!(q.capacity() <= 64);
    }
}
