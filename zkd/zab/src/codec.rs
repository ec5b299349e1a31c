//! The quorum wire format: one frame per envelope, jute-style big-endian
//! fields after a 4-byte length. Decoding is total: any byte string gives a
//! message or an error, never a panic and never an allocation larger than
//! the frame (vectors are bounded by the bytes left).

use zk_proto::jute::{DecodeError, Reader, Writer};

use crate::peer::Envelope;
use crate::types::*;

fn state_code(s: PeerState) -> i32 {
    match s {
        PeerState::Looking => 0,
        PeerState::Following => 1,
        PeerState::Leading => 2,
        PeerState::Observing => 3,
    }
}

fn state_of(v: i32) -> Result<PeerState, DecodeError> {
    Ok(match v {
        0 => PeerState::Looking,
        1 => PeerState::Following,
        2 => PeerState::Leading,
        3 => PeerState::Observing,
        x => return Err(DecodeError::BadValue("peer state", x as i64)),
    })
}

fn put_txns(w: &mut Writer, t: &[Txn]) {
    w.i32(t.len() as i32);
    for x in t {
        w.i64(x.zxid as i64).buffer(&x.data);
    }
}

fn get_txns(r: &mut Reader) -> Result<Vec<Txn>, DecodeError> {
    // Each txn is at least 12 bytes: the count cannot exceed what is left.
    r.vec(12, |r| {
        Ok(Txn {
            zxid: r.i64()? as u64,
            data: r.buffer()?.into(),
        })
    })
}

pub fn encode(env: &Envelope) -> Vec<u8> {
    let mut w = Writer::framed_with_capacity(len_hint(env));
    write(env, &mut w);
    w.finish_frame()
}

/// About how many bytes an envelope's body takes, to size buffers once
/// (a proposal carries up to a MiB of znode data).
pub fn len_hint(env: &Envelope) -> usize {
    let txns = |t: &[Txn]| t.iter().map(|x| 12 + x.data.len()).sum::<usize>();
    64 + match &env.msg {
        Msg::Proposal(t) | Msg::Inform(t) => t.data.len(),
        Msg::Sync(Sync::Diff(t)) => txns(t),
        Msg::Sync(Sync::Snap { state, log, .. }) => state.len() + txns(log),
        _ => 0,
    }
}

/// An envelope's body (no length prefix), appended to `w`.
pub fn write(env: &Envelope, w: &mut Writer) {
    w.i64(env.conn as i64).i64(env.seq as i64);
    match &env.msg {
        Msg::Vote(v) => {
            w.i32(1)
                .i64(v.leader as i64)
                .i64(v.zxid as i64)
                .i64(v.peer_epoch as i64)
                .i64(v.round as i64)
                .i32(state_code(v.state));
        }
        Msg::FollowerInfo {
            accepted_epoch,
            last_zxid,
            observer,
        } => {
            w.i32(2)
                .i64(*accepted_epoch as i64)
                .i64(*last_zxid as i64)
                .bool(*observer);
        }
        Msg::LeaderInfo { epoch } => {
            w.i32(3).i64(*epoch as i64);
        }
        Msg::AckEpoch {
            current_epoch,
            last_zxid,
        } => {
            w.i32(4).i64(*current_epoch as i64).i64(*last_zxid as i64);
        }
        Msg::Sync(Sync::Diff(t)) => {
            w.i32(5);
            put_txns(w, t);
        }
        Msg::Sync(Sync::Snap { upto, state, log }) => {
            w.i32(6).i64(*upto as i64).buffer(state);
            put_txns(w, log);
        }
        Msg::NewLeader { epoch } => {
            w.i32(7).i64(*epoch as i64);
        }
        Msg::AckNewLeader { epoch } => {
            w.i32(8).i64(*epoch as i64);
        }
        Msg::UpToDate { committed } => {
            w.i32(9).i64(*committed as i64);
        }
        Msg::Proposal(t) => {
            w.i32(10).i64(t.zxid as i64).buffer(&t.data);
        }
        Msg::Ack { zxid } => {
            w.i32(11).i64(*zxid as i64);
        }
        Msg::Commit { zxid } => {
            w.i32(12).i64(*zxid as i64);
        }
        Msg::Inform(t) => {
            w.i32(13).i64(t.zxid as i64).buffer(&t.data);
        }
        Msg::Ping { committed } => {
            w.i32(14).i64(*committed as i64);
        }
        Msg::PingAck => {
            w.i32(15);
        }
        Msg::Logged { zxid } => {
            w.i32(16).i64(*zxid as i64);
        }
    }
}

/// Decodes one frame body (without its length prefix).
pub fn decode(body: &[u8]) -> Result<Envelope, DecodeError> {
    let mut r = Reader::new(body);
    let conn = r.i64()? as u64;
    let seq = r.i64()? as u64;
    let u = |r: &mut Reader| -> Result<u64, DecodeError> { Ok(r.i64()? as u64) };
    let msg = match r.i32()? {
        1 => Msg::Vote(Vote {
            leader: u(&mut r)?,
            zxid: u(&mut r)?,
            peer_epoch: u(&mut r)?,
            round: u(&mut r)?,
            state: state_of(r.i32()?)?,
        }),
        2 => Msg::FollowerInfo {
            accepted_epoch: u(&mut r)?,
            last_zxid: u(&mut r)?,
            observer: r.bool()?,
        },
        3 => Msg::LeaderInfo { epoch: u(&mut r)? },
        4 => Msg::AckEpoch {
            current_epoch: u(&mut r)?,
            last_zxid: u(&mut r)?,
        },
        5 => Msg::Sync(Sync::Diff(get_txns(&mut r)?)),
        6 => Msg::Sync(Sync::Snap {
            upto: r.i64()? as u64,
            state: r.buffer()?,
            log: get_txns(&mut r)?,
        }),
        7 => Msg::NewLeader { epoch: u(&mut r)? },
        8 => Msg::AckNewLeader { epoch: u(&mut r)? },
        9 => Msg::UpToDate {
            committed: u(&mut r)?,
        },
        10 => Msg::Proposal(Txn {
            zxid: u(&mut r)?,
            data: r.buffer()?.into(),
        }),
        11 => Msg::Ack { zxid: u(&mut r)? },
        12 => Msg::Commit { zxid: u(&mut r)? },
        13 => Msg::Inform(Txn {
            zxid: u(&mut r)?,
            data: r.buffer()?.into(),
        }),
        14 => Msg::Ping {
            committed: u(&mut r)?,
        },
        15 => Msg::PingAck,
        16 => Msg::Logged { zxid: u(&mut r)? },
        t => return Err(DecodeError::BadValue("quorum message type", t as i64)),
    };
    if r.remaining() != 0 {
        return Err(DecodeError::BadValue(
            "trailing bytes",
            r.remaining() as i64,
        ));
    }
    Ok(Envelope { conn, seq, msg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let t = Txn {
            zxid: zxid(3, 4),
            data: b"data".to_vec().into(),
        };
        let msgs = vec![
            Msg::Vote(Vote {
                leader: 2,
                zxid: 9,
                peer_epoch: 1,
                round: 7,
                state: PeerState::Following,
            }),
            Msg::FollowerInfo {
                accepted_epoch: 1,
                last_zxid: 2,
                observer: true,
            },
            Msg::LeaderInfo { epoch: 4 },
            Msg::AckEpoch {
                current_epoch: 3,
                last_zxid: 5,
            },
            Msg::Sync(Sync::Diff(vec![t.clone()])),
            Msg::Sync(Sync::Snap {
                upto: 7,
                state: b"tree".to_vec(),
                log: vec![t.clone(), t.clone()],
            }),
            Msg::NewLeader { epoch: 4 },
            Msg::AckNewLeader { epoch: 4 },
            Msg::UpToDate { committed: 8 },
            Msg::Proposal(t.clone()),
            Msg::Ack { zxid: 8 },
            Msg::Commit { zxid: 8 },
            Msg::Logged { zxid: 9 },
            Msg::Inform(t),
            Msg::Ping { committed: 1 },
            Msg::PingAck,
        ];
        for msg in msgs {
            let env = Envelope {
                conn: 5,
                seq: 6,
                msg,
            };
            let frame = encode(&env);
            assert_eq!(
                u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
                frame.len() - 4
            );
            assert_eq!(decode(&frame[4..]).unwrap(), env);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"").is_err());
        assert!(decode(&[0; 20]).is_err());
        let mut f = encode(&Envelope {
            conn: 1,
            seq: 1,
            msg: Msg::PingAck,
        });
        f.push(0);
        assert!(decode(&f[4..]).is_err());
        // A vector count far beyond the bytes left is refused, not allocated.
        let mut w = Writer::new();
        w.i64(0).i64(0).i32(5).i32(i32::MAX);
        assert!(decode(&w.buf).is_err());
    }
}
