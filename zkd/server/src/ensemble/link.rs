//! One outgoing peer connection's send queue, which another thread may
//! also send on directly.
//!
//! The core queues frames (`Link::send`) and the connection's task writes
//! them. A learner's ack of a proposal may only leave after the proposal
//! is synced, and the storage thread knows that first: it sends the ack
//! itself (`Link::send_now`) instead of waking the core to queue it. On a
//! lone write that removes one thread wake-up (~25-30 µs on a VM) from
//! the ~8 on a write's path through a 3-member ensemble.
//!
//! Order on the connection is kept the way `outbox` keeps a client's: a
//! direct send happens only while the writer is idle with nothing queued
//! (everything it took is written), under the same lock it takes its
//! frames with; otherwise the frame is queued behind the others.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The sending side: held by the transport, cloned for the storage thread.
#[derive(Clone)]
pub struct Link(Arc<Shared>);

/// The connection task's side.
pub struct Writer(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    /// The writer has something to look at (a permit if it is busy).
    ready: Notify,
}

#[derive(Default)]
struct State {
    items: VecDeque<Vec<u8>>,
    /// The writer took a frame and has not come back for more: a frame
    /// sent now would overtake it.
    busy: bool,
    /// The connected socket, after our hello went out; `None` while the
    /// link is down (the connection task holds the socket open while it is
    /// here).
    socket: Option<RawFd>,
    /// The transport is gone: after what is queued, the writer ends.
    ended: bool,
}

pub fn new() -> (Link, Writer) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        ready: Notify::new(),
    });
    (Link(shared.clone()), Writer(shared))
}

impl Link {
    /// Queues a frame for the writer.
    pub fn send(&self, frame: Vec<u8>) {
        self.0.push(frame, false);
    }

    /// Sends the frame on the socket now if the writer is idle with
    /// nothing queued; what the socket does not take (all of it, if the
    /// link is down or busy) is queued for the writer, in order.
    pub fn send_now(&self, frame: Vec<u8>) {
        self.0.push(frame, true);
    }

    /// No more frames will be sent: the writer ends after what is queued.
    pub fn end(&self) {
        self.0.state.lock().expect("link lock").ended = true;
        self.0.ready.notify_one();
    }
}

impl Shared {
    fn push(&self, mut frame: Vec<u8>, now: bool) {
        let mut s = self.state.lock().expect("link lock");
        if now && !s.busy && s.items.is_empty() {
            if let Some(fd) = s.socket {
                let sent = crate::outbox::send_some(fd, &frame);
                if sent == frame.len() {
                    return;
                }
                frame.drain(..sent);
            }
        }
        s.items.push_back(frame);
        drop(s);
        self.ready.notify_one();
    }
}

/// While alive, direct sends may use the socket; dropped before the
/// socket is closed.
pub struct Attached(Arc<Shared>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.state.lock().expect("link lock").socket = None;
    }
}

impl Writer {
    /// The next frame; `None` once the link ended and everything queued
    /// before was taken. Cancel-safe: a frame is taken only when returned.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            {
                let mut s = self.0.state.lock().expect("link lock");
                if let Some(f) = s.items.pop_front() {
                    s.busy = true;
                    return Some(f);
                }
                // Everything taken before is written.
                s.busy = false;
                if s.ended {
                    return None;
                }
                if s.items.capacity() > 64 {
                    s.items = VecDeque::new();
                }
            }
            self.0.ready.notified().await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        self.0.state.lock().expect("link lock").items.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.0.state.lock().expect("link lock").items.is_empty()
    }

    /// The link is down: what was queued is lost.
    pub fn discard(&mut self) {
        let mut s = self.0.state.lock().expect("link lock");
        s.items = VecDeque::new();
        s.busy = false;
    }

    pub fn ended(&self) -> bool {
        self.0.state.lock().expect("link lock").ended
    }

    /// Direct sends may write to `socket` (connected, open for as long as
    /// the returned guard lives) from now on.
    pub fn attach(&self, socket: RawFd) -> Attached {
        self.0.state.lock().expect("link lock").socket = Some(socket);
        Attached(self.0.clone())
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
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_direct_send_goes_out_only_while_the_writer_is_idle() {
        let (link, mut w) = new();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // Down: queued, not lost.
        link.send_now(b"a".to_vec());
        {
            let _up = w.attach(ours.as_raw_fd());
            // The writer has "a" and has not come back: "b" waits behind it.
            assert_eq!(w.recv().await, Some(b"a".to_vec()));
            link.send_now(b"b".to_vec());
            assert_eq!(read_now(&mut theirs), b"");
            assert_eq!(w.try_recv(), Some(b"b".to_vec()));
            // Back for more with nothing queued: idle, so "c" goes straight out.
            let next = tokio::time::timeout(std::time::Duration::from_millis(20), w.recv()).await;
            assert!(next.is_err(), "nothing was queued");
            link.send_now(b"c".to_vec());
            assert_eq!(read_now(&mut theirs), b"c");
            // A queued frame is never overtaken by a direct one.
            link.send(b"d".to_vec());
            link.send_now(b"e".to_vec());
            assert_eq!(read_now(&mut theirs), b"");
            assert_eq!(w.recv().await, Some(b"d".to_vec()));
            assert_eq!(w.try_recv(), Some(b"e".to_vec()));
        }
        // Detached (the connection is closing): nothing touches the socket.
        let next = tokio::time::timeout(std::time::Duration::from_millis(20), w.recv()).await;
        assert!(next.is_err());
        link.send_now(b"f".to_vec());
        assert_eq!(read_now(&mut theirs), b"");
        assert!(!w.is_empty());
        w.discard();
        assert!(w.is_empty());
        link.end();
        assert_eq!(w.recv().await, None);
        assert!(w.ended());
    }
}
