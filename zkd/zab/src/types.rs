//! The values ZAB moves around: zxids, txns, votes and the quorum messages.

/// zxid = epoch << 32 | counter.
pub type Zxid = u64;
pub type Id = u64;

pub fn zxid(epoch: u64, counter: u64) -> Zxid {
    (epoch << 32) | (counter & 0xffff_ffff)
}

pub fn epoch_of(z: Zxid) -> u64 {
    z >> 32
}

pub fn counter_of(z: Zxid) -> u64 {
    z & 0xffff_ffff
}

/// One replicated transaction; the data is opaque to ZAB. It is shared,
/// not copied, between the log, the proposal to each follower and the
/// write to disk: a leader held four copies of every 10 KiB txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub zxid: Zxid,
    pub data: Payload,
}

pub type Payload = std::sync::Arc<Vec<u8>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Looking,
    Following,
    Leading,
    Observing,
}

/// An election notification: who the sender proposes, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub leader: Id,
    pub zxid: Zxid,
    pub peer_epoch: u64,
    /// The sender's election round (`electionEpoch` in the reference).
    pub round: u64,
    pub state: PeerState,
}

impl Vote {
    /// The order of candidates: peer epoch, then zxid, then id.
    pub fn key(&self) -> (u64, Zxid, Id) {
        (self.peer_epoch, self.zxid, self.leader)
    }
}

/// How a leader brings a learner up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync {
    /// The learner's log is a prefix of the leader's: here is the rest.
    Diff(Vec<Txn>),
    /// The learner's log does not continue from a point the leader still
    /// holds: replace its state with the leader's applied state at `upto`
    /// (opaque to ZAB, filled in by the runtime, see `Output::SendSnap`)
    /// and its log with `log`, the leader's txns after `upto`.
    Snap {
        upto: Zxid,
        state: Vec<u8>,
        log: Vec<Txn>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Vote(Vote),
    FollowerInfo {
        accepted_epoch: u64,
        last_zxid: Zxid,
        observer: bool,
    },
    LeaderInfo {
        epoch: u64,
    },
    AckEpoch {
        current_epoch: u64,
        last_zxid: Zxid,
    },
    Sync(Sync),
    NewLeader {
        epoch: u64,
    },
    AckNewLeader {
        epoch: u64,
    },
    UpToDate {
        committed: Zxid,
    },
    Proposal(Txn),
    Ack {
        zxid: Zxid,
    },
    Commit {
        zxid: Zxid,
    },
    /// Leader to a learner that forwarded a txn: the leader's own log
    /// holds its proposals up to `zxid` durably (see `Peer`).
    Logged {
        zxid: Zxid,
    },
    /// A committed txn, to an observer.
    Inform(Txn),
    Ping {
        committed: Zxid,
    },
    PingAck,
}

impl Msg {
    /// Election messages travel on their own connections and may be lost,
    /// duplicated or reordered; everything else is one FIFO stream per
    /// learner whose loss ends the stream (TCP).
    pub fn is_election(&self) -> bool {
        matches!(self, Msg::Vote(_))
    }
}
