//! Byte-exact codec tests against frames captured from real clients (kazoo
//! and zkCli.sh) talking to Apache ZooKeeper 3.8.0, recorded with
//! `scripts/capture-frames.py`. Every frame is decoded as the record the
//! protocol says it is and encoded again; the bytes must be identical.

use std::collections::HashMap;

use zk_proto::jute::Reader;
use zk_proto::records::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes `bytes` as `T`, checks nothing is left over, and re-encodes.
fn round_trip<T: Record + std::fmt::Debug>(bytes: &[u8]) -> Vec<u8> {
    let mut r = Reader::new(bytes);
    let v =
        T::read(&mut r).unwrap_or_else(|e| panic!("decode {}: {e}", std::any::type_name::<T>()));
    assert_eq!(
        r.remaining(),
        0,
        "{} left bytes over: {v:?}",
        std::any::type_name::<T>()
    );
    v.encode()
}

fn request_body(op: i32, body: &[u8]) -> Vec<u8> {
    match op {
        1 | 15 | 19 => round_trip::<CreateRequest>(body),
        2 => round_trip::<DeleteRequest>(body),
        3 | 4 | 8 | 12 => round_trip::<PathWatch>(body),
        5 => round_trip::<SetDataRequest>(body),
        6 | 9 => round_trip::<PathRequest>(body),
        7 => round_trip::<SetAclRequest>(body),
        13 => round_trip::<CheckVersionRequest>(body),
        14 | 22 => round_trip::<MultiRequest>(body),
        100 => round_trip::<AuthPacket>(body),
        101 => round_trip::<SetWatches>(body),
        11 | -11 => {
            assert!(body.is_empty());
            Vec::new()
        }
        103 => round_trip::<PathRequest>(body),
        104 => round_trip::<PathRequest>(body),
        other => panic!("captured an opcode the test does not know: {other}"),
    }
}

fn reply_body(op: i32, body: &[u8]) -> Vec<u8> {
    match op {
        1 => round_trip::<CreateResponse>(body),
        15 | 19 | 21 => round_trip::<Create2Response>(body),
        3 | 5 | 7 => round_trip::<StatResponse>(body),
        4 => round_trip::<GetDataResponse>(body),
        6 => round_trip::<GetAclResponse>(body),
        8 => round_trip::<GetChildrenResponse>(body),
        12 => round_trip::<GetChildren2Response>(body),
        9 => round_trip::<PathRequest>(body),
        14 | 22 => round_trip::<MultiResponse>(body),
        103 => {
            let mut r = Reader::new(body);
            let v = r.strings().unwrap();
            assert_eq!(r.remaining(), 0);
            let mut w = zk_proto::Writer::new();
            w.strings(&v);
            w.buf
        }
        104 => body.to_vec(),
        2 | 11 | 13 | 100 | 101 | -11 => {
            assert!(body.is_empty());
            Vec::new()
        }
        other => panic!("reply to an opcode the test does not know: {other}"),
    }
}

#[test]
fn every_captured_frame_round_trips_byte_for_byte() {
    let text = include_str!("captured/kazoo-and-zkcli-vs-zookeeper-3.8.0.txt");
    let mut started: HashMap<(String, char), bool> = HashMap::new();
    let mut ops: HashMap<(String, i32), i32> = HashMap::new();
    let mut checked: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (conn, dir, hex) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let dir = dir.chars().next().unwrap();
        let frame = unhex(hex);
        let body = &frame[4..];
        assert_eq!(
            i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            body.len()
        );
        let first = !started.contains_key(&(conn.clone(), dir));
        started.insert((conn.clone(), dir), true);
        let again = match (dir, first) {
            ('c', true) => {
                *checked.entry("connect request").or_default() += 1;
                round_trip::<ConnectRequest>(body)
            }
            ('s', true) => {
                *checked.entry("connect response").or_default() += 1;
                round_trip::<ConnectResponse>(body)
            }
            ('c', false) => {
                let mut r = Reader::new(body);
                let h = RequestHeader::read(&mut r).unwrap();
                ops.insert((conn.clone(), h.xid), h.op);
                *checked.entry("request").or_default() += 1;
                let mut out = h.encode();
                out.extend(request_body(h.op, r.rest()));
                out
            }
            _ => {
                let mut r = Reader::new(body);
                let h = ReplyHeader::read(&mut r).unwrap();
                let mut out = h.encode();
                if h.xid == -1 {
                    *checked.entry("notification").or_default() += 1;
                    out.extend(round_trip::<WatcherEvent>(r.rest()));
                } else if h.err != 0 {
                    assert_eq!(r.remaining(), 0, "an error reply has no body");
                    *checked.entry("error reply").or_default() += 1;
                } else {
                    let op = ops[&(conn.clone(), h.xid)];
                    *checked.entry("reply").or_default() += 1;
                    out.extend(reply_body(op, r.rest()));
                }
                out
            }
        };
        assert_eq!(again, body, "frame {line} did not round-trip");
    }
    // The capture covers the handshake both ways, requests, replies, errors
    // and watch notifications.
    for kind in [
        "connect request",
        "connect response",
        "request",
        "reply",
        "error reply",
        "notification",
    ] {
        assert!(
            checked.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in the capture: {checked:?}"
        );
    }
}

#[test]
fn the_44_byte_handshake_of_old_clients() {
    // A 3.3-era ConnectRequest: no readOnly byte.
    let mut body = unhex("00000000000000000000000000002710000000000000000000000010");
    body.extend([0u8; 16]);
    assert_eq!(body.len(), 44);
    let req = ConnectRequest::decode(&body).unwrap();
    assert_eq!((req.timeout_ms, req.read_only), (10000, None));
    assert_eq!(req.encode(), body);
}
