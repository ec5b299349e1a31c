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
//! The queue and its ordering rule are `sendq`'s, shared with the client
//! connections' `outbox`; a link adds attaching each new connection's
//! socket (it redials) and detaching it before that socket closes.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::sendq::{Out, SendQueue};

/// The sending side: held by the transport, cloned for the storage thread.
#[derive(Clone)]
pub struct Link(Arc<SendQueue>);

/// The connection task's side.
pub struct Writer(Arc<SendQueue>);

pub fn new() -> (Link, Writer) {
    let q = Arc::new(SendQueue::new(None));
    (Link(q.clone()), Writer(q))
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
        self.0.end();
    }
}

/// While alive, direct sends may use the socket; dropped before the
/// socket is closed.
pub struct Attached(Arc<SendQueue>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.set_socket(None);
    }
}

impl Writer {
    /// The next frame; `None` once the link ended and everything queued
    /// before was taken. Cancel-safe: a frame is taken only when returned.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let o = self.0.recv().await;
        self.taken(o)
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        let o = self.0.try_recv();
        self.taken(o)
    }

    /// A link only ever queues frames (`Out::Close` is the outbox's). The
    /// queue's byte count is the outbox's throttle; a link has none and
    /// counts a frame gone once it is taken.
    fn taken(&self, o: Option<Out>) -> Option<Vec<u8>> {
        match o {
            Some(Out::Frame(f)) => {
                self.0.written(f.len());
                Some(f.into_vec())
            }
            Some(Out::Close) | None => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The link is down: what was queued is lost.
    pub fn discard(&mut self) {
        self.0.discard();
    }

    pub fn ended(&self) -> bool {
        self.0.ended()
    }

    /// Direct sends may write to `socket` (connected, open for as long as
    /// the returned guard lives) from now on.
    pub fn attach(&self, socket: RawFd) -> Attached {
        self.0.set_socket(Some(socket));
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

    // The ordering rule itself is tested in `sendq`; this tests that a
    // link sends directly only while a connection is attached.
    #[tokio::test]
    async fn a_direct_send_uses_only_an_attached_socket() {
        let (link, mut w) = new();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // Down: queued, not lost.
        link.send_now(b"a".to_vec());
        {
            let _up = w.attach(ours.as_raw_fd());
            assert_eq!(w.recv().await, Some(b"a".to_vec()));
            let next = tokio::time::timeout(std::time::Duration::from_millis(20), w.recv()).await;
            assert!(next.is_err(), "nothing was queued");
            // Attached and idle: "b" goes straight out.
            link.send_now(b"b".to_vec());
            assert_eq!(read_now(&mut theirs), b"b");
            // A plain send is always queued.
            link.send(b"c".to_vec());
            assert_eq!(read_now(&mut theirs), b"");
            assert_eq!(w.recv().await, Some(b"c".to_vec()));
        }
        // Detached (the connection is closing): nothing touches the socket.
        let next = tokio::time::timeout(std::time::Duration::from_millis(20), w.recv()).await;
        assert!(next.is_err());
        link.send_now(b"d".to_vec());
        assert_eq!(read_now(&mut theirs), b"");
        assert!(!w.is_empty());
        // Redialling drops what the lost connection did not send.
        w.discard();
        assert!(w.is_empty());
        link.end();
        assert_eq!(w.recv().await, None);
        assert!(w.ended());
    }
}
