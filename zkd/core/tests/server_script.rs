//! The core driven with scripted inputs and a fake clock: no sockets, no
//! sleeping. Each test reads the frames the core emits.

use zk_proto::jute::{Reader, Writer};
use zk_proto::records::*;
use zkd_core::server::{Config, Effect, Now, Server};
use zkd_core::tree::DataTree;

fn server() -> Server {
    let cfg = Config {
        min_session_timeout_ms: 200,
        max_session_timeout_ms: 2000,
        reap_interval_ms: 1000,
        ..Config::new(1, 100)
    };
    Server::new(cfg, DataTree::new(), 0, Vec::new(), Now::default(), 42)
}

fn at(ms: i64) -> Now {
    Now {
        wall_ms: 1_000_000 + ms,
        mono_ms: ms,
    }
}

fn connect(s: &mut Server, conn: u64, now: Now, timeout: i32) -> ConnectResponse {
    let req = ConnectRequest {
        timeout_ms: timeout,
        passwd: vec![0; 16],
        read_only: Some(false),
        ..Default::default()
    };
    s.connect(now, conn, "127.0.0.1", 40000 + conn as u16, &req);
    let fx = s.take_effects();
    match &fx[0] {
        Effect::Send(c, b) if *c == conn => ConnectResponse::decode(&b.head()[4..]).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn request(op: i32, xid: i32, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    RequestHeader { xid, op }.write(&mut w);
    w.bytes(body);
    w.buf
}

fn frames(fx: &[Effect]) -> Vec<(u64, ReplyHeader, Vec<u8>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send(c, b) => {
                let b = b.clone().into_vec();
                let mut r = Reader::new(&b[4..]);
                let h = ReplyHeader::read(&mut r).unwrap();
                Some((*c, h, r.rest().to_vec()))
            }
            Effect::Close(_) => None,
        })
        .collect()
}

fn create_ephemeral(path: &str) -> Vec<u8> {
    CreateRequest {
        path: path.into(),
        data: vec![],
        acl: Acl::open_unsafe(),
        flags: 1,
    }
    .encode()
}

#[test]
fn expiry_is_driven_by_the_clock_passed_in() {
    let mut s = server();
    let rsp = connect(&mut s, 1, at(0), 500);
    assert_eq!(rsp.timeout_ms, 500);
    s.packet(at(10), 1, &request(1, 1, &create_ephemeral("/e")));
    s.take_effects();
    let _ = s.take_persist();
    s.tick(at(550));
    assert!(s.tree().get("/e").is_some(), "expired before its timeout");
    s.tick(at(700));
    assert!(s.tree().get("/e").is_none(), "ephemeral survived expiry");
    let fx = s.take_effects();
    assert!(fx.contains(&Effect::Close(1)));
    let p = s.take_persist();
    assert!(p
        .sessions
        .iter()
        .any(|(id, v)| *id == rsp.session_id && v.is_none()));
    assert!(p.nodes.iter().any(|(path, v)| path == "/e" && v.is_none()));
}

#[test]
fn pings_keep_a_session_alive() {
    let mut s = server();
    connect(&mut s, 1, at(0), 500);
    s.packet(at(10), 1, &request(1, 1, &create_ephemeral("/e")));
    for t in (100..3000).step_by(150) {
        s.packet(at(t), 1, &request(11, -2, &[]));
        s.tick(at(t));
    }
    assert!(s.tree().get("/e").is_some());
}

#[test]
fn the_watch_event_precedes_the_reply_of_the_write_that_fired_it() {
    let mut s = server();
    connect(&mut s, 1, at(0), 1000);
    connect(&mut s, 2, at(0), 1000);
    s.packet(
        at(1),
        1,
        &request(
            1,
            1,
            &CreateRequest {
                path: "/a".into(),
                acl: Acl::open_unsafe(),
                ..Default::default()
            }
            .encode(),
        ),
    );
    s.take_effects();
    // Both connections watch /a; connection 1 then changes it.
    for c in [1, 2] {
        s.packet(
            at(2),
            c,
            &request(
                4,
                2,
                &PathWatch {
                    path: "/a".into(),
                    watch: true,
                }
                .encode(),
            ),
        );
    }
    s.take_effects();
    s.packet(
        at(3),
        1,
        &request(
            5,
            3,
            &SetDataRequest {
                path: "/a".into(),
                data: b"x".to_vec(),
                version: -1,
            }
            .encode(),
        ),
    );
    let f = frames(&s.take_effects());
    let mine: Vec<i32> = f
        .iter()
        .filter(|(c, _, _)| *c == 1)
        .map(|(_, h, _)| h.xid)
        .collect();
    assert_eq!(mine, vec![-1, 3], "event first, then the setData reply");
    let theirs: Vec<i32> = f
        .iter()
        .filter(|(c, _, _)| *c == 2)
        .map(|(_, h, _)| h.xid)
        .collect();
    assert_eq!(theirs, vec![-1]);
    // The event carries the zxid of the write (3.9 behaviour).
    let reply_zxid = f
        .iter()
        .find(|(c, h, _)| *c == 1 && h.xid == 3)
        .unwrap()
        .1
        .zxid;
    assert!(f
        .iter()
        .filter(|(_, h, _)| h.xid == -1)
        .all(|(_, h, _)| h.zxid == reply_zxid));
}

#[test]
fn a_failed_write_consumes_a_zxid_and_is_logged() {
    let mut s = server();
    connect(&mut s, 1, at(0), 1000);
    let before = s.last_zxid();
    s.packet(
        at(1),
        1,
        &request(
            2,
            1,
            &DeleteRequest {
                path: "/missing".into(),
                version: -1,
            }
            .encode(),
        ),
    );
    let f = frames(&s.take_effects());
    assert_eq!(f[0].1.err, -101);
    assert_eq!(s.last_zxid(), before + 1);
    assert_eq!(
        s.take_persist().log.len(),
        2,
        "createSession and the error txn"
    );
}

#[test]
fn reads_persist_nothing() {
    let mut s = server();
    connect(&mut s, 1, at(0), 1000);
    let _ = s.take_persist();
    s.packet(
        at(1),
        1,
        &request(
            3,
            1,
            &PathWatch {
                path: "/".into(),
                watch: false,
            }
            .encode(),
        ),
    );
    assert!(s.take_persist().is_empty());
}

#[test]
fn containers_and_ttl_nodes_are_reaped_on_the_clock_passed_in() {
    let mut s = server();
    connect(&mut s, 1, at(0), 1000);
    let cont = CreateRequest {
        path: "/c".into(),
        acl: Acl::open_unsafe(),
        flags: 4,
        ..Default::default()
    };
    s.packet(at(1), 1, &request(19, 1, &cont.encode()));
    let kid = CreateRequest {
        path: "/c/k".into(),
        acl: Acl::open_unsafe(),
        ..Default::default()
    };
    s.packet(at(2), 1, &request(1, 2, &kid.encode()));
    let mut w = Writer::new();
    CreateRequest {
        path: "/t".into(),
        acl: Acl::open_unsafe(),
        flags: 5,
        ..Default::default()
    }
    .write(&mut w);
    w.i64(5000);
    s.packet(at(3), 1, &request(21, 3, &w.buf));
    let never = CreateRequest {
        path: "/empty".into(),
        acl: Acl::open_unsafe(),
        ..Default::default()
    };
    s.packet(at(4), 1, &request(19, 4, &never.encode()));
    let f = frames(&s.take_effects());
    assert!(f.iter().all(|(_, h, _)| h.err == 0), "{f:?}");
    // A container's ephemeralOwner reads as 0, as in the reference.
    assert_eq!(s.tree().get("/c").unwrap().stat().ephemeral_owner, 0);
    s.packet(
        at(5),
        1,
        &request(
            2,
            5,
            &DeleteRequest {
                path: "/c/k".into(),
                version: -1,
            }
            .encode(),
        ),
    );
    for t in [500, 1100, 2100] {
        s.packet(at(t), 1, &request(11, -2, &[]));
        s.tick(at(t));
    }
    assert!(
        s.tree().get("/c").is_none(),
        "emptied container not removed"
    );
    assert!(
        s.tree().get("/empty").is_some(),
        "a container that never had children stays"
    );
    assert!(
        s.tree().get("/t").is_some(),
        "TTL node removed before its TTL"
    );
    s.packet(at(6000), 1, &request(11, -2, &[]));
    s.tick(at(6100));
    assert!(s.tree().get("/t").is_none(), "TTL node outlived its TTL");
}

/// Big child lists are served from a cache (see `children_cache`): every
/// create and delete under the parent must show in the next listing.
#[test]
fn big_child_lists_follow_creates_and_deletes() {
    let mut s = server();
    connect(&mut s, 1, at(0), 2000);
    let create = |path: &str| {
        CreateRequest {
            path: path.into(),
            data: vec![],
            acl: Acl::open_unsafe(),
            flags: 0,
        }
        .encode()
    };
    let mut xid = 0;
    let mut call = |s: &mut Server, op: i32, body: Vec<u8>| {
        xid += 1;
        s.packet(at(10), 1, &request(op, xid, &body));
        let f = frames(&s.take_effects());
        let _ = s.take_persist();
        assert_eq!(f.len(), 1, "one reply");
        assert_eq!(f[0].1.err, 0, "op {op} failed");
        f[0].2.clone()
    };
    call(&mut s, 1, create("/p"));
    for i in 0..300 {
        call(&mut s, 1, create(&format!("/p/c{i:03}")));
    }
    type Call<'a> = dyn FnMut(&mut Server, i32, Vec<u8>) -> Vec<u8> + 'a;
    let list = |s: &mut Server, call: &mut Call| {
        let body = GetChildrenRequest {
            path: "/p".into(),
            watch: false,
        }
        .encode();
        let mut names = GetChildrenResponse::decode(&call(s, 8, body.clone()))
            .unwrap()
            .children;
        let mut again = GetChildren2Response::decode(&call(s, 12, body)).unwrap();
        names.sort();
        again.children.sort();
        assert_eq!(names, again.children, "getChildren and getChildren2 agree");
        assert_eq!(again.stat.num_children as usize, names.len());
        names
    };
    let first = list(&mut s, &mut call);
    assert_eq!(first.len(), 300);
    assert_eq!(list(&mut s, &mut call), first, "a repeated listing");
    call(&mut s, 1, create("/p/new"));
    let after_create = list(&mut s, &mut call);
    assert_eq!(after_create.len(), 301);
    assert!(after_create.contains(&"new".to_string()));
    call(
        &mut s,
        2,
        DeleteRequest {
            path: "/p/c007".into(),
            version: -1,
        }
        .encode(),
    );
    let after_delete = list(&mut s, &mut call);
    assert_eq!(after_delete.len(), 300);
    assert!(!after_delete.contains(&"c007".to_string()));
    assert!(after_delete.contains(&"new".to_string()));
}

#[test]
fn get_data_replies_carry_the_data_whole_or_shared() {
    use zkd_core::data::SHARE_MIN;
    use zkd_core::out_frame::OutFrame;
    let mut s = server();
    connect(&mut s, 1, at(0), 2000);
    // Around the size from which the tree shares data instead of copying.
    for (i, len) in [0, 100, SHARE_MIN - 1, SHARE_MIN, 10 * 1024]
        .into_iter()
        .enumerate()
    {
        let path = format!("/d{i}");
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let create = CreateRequest {
            path: path.clone(),
            data: data.clone(),
            acl: Acl::open_unsafe(),
            flags: 0,
        };
        s.packet(at(10), 1, &request(1, 2 * i as i32 + 1, &create.encode()));
        let _ = s.take_effects();
        let _ = s.take_persist();
        let get = PathWatch { path, watch: false };
        s.packet(at(10), 1, &request(4, 2 * i as i32 + 2, &get.encode()));
        let fx = s.take_effects();
        let Effect::Send(_, frame) = &fx[0] else {
            panic!("{fx:?}")
        };
        // Big data goes out from the tree's buffer, not a copy of it.
        let shared = matches!(frame, OutFrame::Shared { .. });
        assert_eq!(shared, len >= SHARE_MIN, "{len} bytes");
        let bytes = frame.clone().into_vec();
        let framed = i32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(framed, bytes.len() - 4, "{len} bytes: the frame's length");
        let f = frames(&fx);
        assert_eq!(f[0].1.err, 0);
        assert_eq!(f[0].1.xid, 2 * i as i32 + 2);
        let r = GetDataResponse::decode(&f[0].2).unwrap();
        assert_eq!(r.data, data, "{len} bytes");
        assert_eq!(r.stat.data_length as usize, len);
    }
}
