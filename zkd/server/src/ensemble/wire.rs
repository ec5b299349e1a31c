//! What ensemble members say to each other, and its framing: a 4-byte
//! big-endian length, a kind byte, then the body. ZAB's own messages use
//! `zkd_zab::codec`; the rest are zkd's: a learner forwarding a client
//! request, a learner telling the leader which sessions are alive, and the
//! leader answering a forwarded `sync`.

use zk_proto::jute::{DecodeError, Reader, Writer};
use zkd_core::server::Forward;
use zkd_zab::peer::Envelope;

/// Refuse frames larger than this from a peer (a full SNAP is one frame).
pub const PEER_FRAME_MAX: usize = 1 << 30;

/// First bytes on every peer connection, then the sender's id and channel.
pub const HELLO_MAGIC: u32 = 0x7a6b_6451; // "zkdQ"

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Votes: may be lost or repeated.
    Election = 1,
    /// The ZAB stream and zkd's requests: FIFO while the connection lives.
    Quorum = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Zab(Envelope),
    Forward(Forward),
    Touch(Vec<i64>),
    SyncDone { session: i64, cxid: i32, upto: i64 },
}

impl Frame {
    pub fn channel(&self) -> Channel {
        match self {
            Frame::Zab(e) if e.msg.is_election() => Channel::Election,
            _ => Channel::Quorum,
        }
    }

    /// The frame with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        // The body is written in place, into a buffer sized once: a 10 KiB
        // proposal copied into a growing frame was a tenth of a loaded
        // leader's CPU (perf, zkbench create 16x32 10 KiB).
        let hint = match self {
            Frame::Zab(env) => zkd_zab::codec::len_hint(env),
            Frame::Forward(f) => f.len_hint(),
            _ => 64,
        };
        let mut out = Writer::framed_with_capacity(1 + hint);
        match self {
            Frame::Zab(env) => {
                out.buf.push(0);
                zkd_zab::codec::write(env, &mut out);
            }
            Frame::Forward(f) => {
                out.buf.push(1);
                f.write(&mut out);
            }
            Frame::Touch(ids) => {
                out.buf.push(2);
                out.i32(ids.len() as i32);
                for id in ids {
                    out.i64(*id);
                }
            }
            Frame::SyncDone {
                session,
                cxid,
                upto,
            } => {
                out.buf.push(3);
                out.i64(*session).i32(*cxid).i64(*upto);
            }
        }
        out.finish_frame()
    }

    /// Decodes a frame body (after the length prefix).
    pub fn decode(b: &[u8]) -> Result<Frame, DecodeError> {
        let (&kind, body) = b
            .split_first()
            .ok_or(DecodeError::Truncated { wanted: 1, left: 0 })?;
        Ok(match kind {
            0 => Frame::Zab(zkd_zab::codec::decode(body)?),
            1 => Frame::Forward(Forward::decode(body)?),
            2 => {
                let mut r = Reader::new(body);
                Frame::Touch(r.vec(8, |r| r.i64())?)
            }
            3 => {
                let mut r = Reader::new(body);
                Frame::SyncDone {
                    session: r.i64()?,
                    cxid: r.i32()?,
                    upto: r.i64()?,
                }
            }
            k => return Err(DecodeError::BadValue("peer frame kind", k as i64)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zkd_core::server::ForwardKind;
    use zkd_zab::types::{Msg, PeerState, Vote};

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Frame::Zab(Envelope {
                conn: 0,
                seq: 0,
                msg: Msg::Vote(Vote {
                    leader: 3,
                    zxid: 5,
                    peer_epoch: 1,
                    round: 2,
                    state: PeerState::Looking,
                }),
            }),
            Frame::Zab(Envelope {
                conn: 9,
                seq: 1,
                msg: Msg::Ack { zxid: 77 },
            }),
            Frame::Forward(Forward {
                origin: 2,
                session: 0x100,
                cxid: 4,
                kind: ForwardKind::Sync,
            }),
            Frame::Touch(vec![1, 2, 3]),
            Frame::SyncDone {
                session: 1,
                cxid: 2,
                upto: 3,
            },
        ];
        for f in frames {
            let b = f.encode();
            let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            assert_eq!(n, b.len() - 4);
            assert_eq!(Frame::decode(&b[4..]).unwrap(), f);
        }
        assert!(Frame::decode(&[]).is_err());
        assert!(Frame::decode(&[9, 0]).is_err());
    }
}
