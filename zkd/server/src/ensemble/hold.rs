//! A learner's stream held behind its SNAP.
//!
//! A leader reads the state a SNAP carries in the background
//! (`Store::read_state_in_background`) and goes on serving meanwhile. What
//! ZAB sends that learner in the meantime (proposals, commits, pings,
//! NEWLEADER) must follow the SNAP on its stream, so it waits here, in
//! order, until the SNAP is ready to go first.
//!
//! A hold is named by a token: a read that finishes for a hold that is no
//! longer current (the learner reconnected and ZAB began its sync again,
//! or the link broke, or the leader stepped down) finds nothing to release
//! and its SNAP is dropped.

use std::collections::HashMap;
use std::time::Instant;

use super::transport::Id;

/// What became of reading the state for a SNAP (`driver::send_snap`).
pub enum SnapRead {
    Ready(Snap),
    /// Not sent, for the reason given; the learner sees a gap in its
    /// stream and syncs again.
    NotSent(String),
    /// The store could not be read.
    Failed(String),
}

#[derive(Default)]
pub struct Holds {
    held: HashMap<Id, Held>,
    next_token: u64,
}

struct Held {
    token: u64,
    frames: Vec<Vec<u8>>,
}

/// A SNAP ready to go.
pub struct Snap {
    /// Encoded, the state in it.
    pub frame: Vec<u8>,
    pub zxid: u64,
    pub state_bytes: usize,
    pub log_txns: usize,
    /// When ZAB asked for it.
    pub started: Instant,
}

/// Without the frame's bytes (hundreds of MB at a million znodes).
impl std::fmt::Debug for SnapRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapRead::Ready(s) => write!(f, "Ready(0x{:x}, {} bytes)", s.zxid, s.frame.len()),
            SnapRead::NotSent(why) => write!(f, "NotSent({why})"),
            SnapRead::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

impl Holds {
    /// From now on frames to `to` wait. An earlier hold of `to` ends and
    /// its frames are dropped: they belonged to a sync ZAB began again.
    pub fn hold(&mut self, to: Id) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.held.insert(
            to,
            Held {
                token,
                frames: Vec::new(),
            },
        );
        token
    }

    /// Keeps `frame` if `to` is held; otherwise gives it back to be sent.
    pub fn keep(&mut self, to: Id, frame: Vec<u8>) -> Option<Vec<u8>> {
        match self.held.get_mut(&to) {
            Some(h) => {
                h.frames.push(frame);
                None
            }
            None => Some(frame),
        }
    }

    /// Ends hold `token` of `to`, if it is still the current one: the
    /// frames it kept, in order. `None`: the hold ended before.
    pub fn release(&mut self, to: Id, token: u64) -> Option<Vec<Vec<u8>>> {
        match self.held.get(&to) {
            Some(h) if h.token == token => self.held.remove(&to).map(|h| h.frames),
            _ => None,
        }
    }

    /// Ends any hold of `to` and drops what it kept (the stream it was
    /// for is gone).
    pub fn drop_peer(&mut self, to: Id) {
        self.held.remove(&to);
    }

    pub fn clear(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_to_a_held_learner_wait_in_order_and_only_for_it() {
        let mut h = Holds::default();
        let t = h.hold(2);
        assert_eq!(h.keep(3, b"to 3".to_vec()), Some(b"to 3".to_vec()));
        assert_eq!(h.keep(2, b"a".to_vec()), None);
        assert_eq!(h.keep(2, b"b".to_vec()), None);
        assert_eq!(h.release(2, t), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(h.keep(2, b"c".to_vec()), Some(b"c".to_vec()));
        assert_eq!(h.release(2, t), None, "released once");
    }

    #[test]
    fn a_hold_that_ended_releases_nothing() {
        let mut h = Holds::default();
        let old = h.hold(2);
        h.keep(2, b"old sync".to_vec());
        let new = h.hold(2);
        h.keep(2, b"new sync".to_vec());
        assert_eq!(h.release(2, old), None);
        assert_eq!(h.release(2, new), Some(vec![b"new sync".to_vec()]));

        let t = h.hold(2);
        h.keep(2, b"x".to_vec());
        h.drop_peer(2);
        assert_eq!(h.release(2, t), None);
        assert_eq!(h.keep(2, b"y".to_vec()), Some(b"y".to_vec()));

        let t = h.hold(3);
        h.clear();
        assert_eq!(h.release(3, t), None);
    }
}
