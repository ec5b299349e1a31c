//! A leader and a learner `Server` wired by hand, as ZAB would: the learner
//! forwards, the leader prepares, every proposal is delivered to both in
//! zxid order. No sockets, no clock, no ZAB: this pins down what the
//! replica roles do with requests and deliveries.

use zk_proto::jute::{Reader, Writer};
use zk_proto::records::*;
use zkd_core::server::{Config, Divergence, Effect, Now, Role, Server};
use zkd_core::tree::DataTree;

fn server(id: i64, tree: DataTree) -> Server {
    let cfg = Config {
        min_session_timeout_ms: 200,
        max_session_timeout_ms: 5000,
        ..Config::new(id, 100)
    };
    Server::new(cfg, tree, 0, Vec::new(), Now::default(), 7 + id as u64)
}

fn at(ms: i64) -> Now {
    Now {
        wall_ms: 1_000_000 + ms,
        mono_ms: ms,
    }
}

fn request(op: i32, xid: i32, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    RequestHeader { xid, op }.write(&mut w);
    w.bytes(body);
    w.buf
}

fn replies(fx: &[Effect]) -> Vec<(u64, ReplyHeader, Vec<u8>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send(c, b) => {
                let b = b.clone().into_vec();
                let mut r = Reader::new(&b[4..]);
                let h = ReplyHeader::read(&mut r).ok()?;
                Some((*c, h, r.rest().to_vec()))
            }
            Effect::Close(_) => None,
        })
        .collect()
}

fn create(path: &str, data: &[u8], flags: i32) -> Vec<u8> {
    CreateRequest {
        path: path.into(),
        data: data.to_vec(),
        acl: Acl::open_unsafe(),
        flags,
    }
    .encode()
}

/// An ensemble of one leader and one learner with a perfect channel.
struct Pair {
    leader: Server,
    learner: Server,
    delivered: Vec<(i64, Vec<u8>)>,
}

impl Pair {
    fn new() -> Pair {
        let mut leader = server(1, DataTree::new());
        let mut learner = server(2, DataTree::new());
        leader.set_role(Role::Leader, 1, at(0));
        learner.set_role(Role::Learner, 0, at(0));
        Pair {
            leader,
            learner,
            delivered: Vec::new(),
        }
    }

    /// Moves the learner's forwards to the leader and delivers what the
    /// leader proposes to both, until nothing is left; returns the
    /// learner's effects.
    fn run(&mut self, now: Now) -> Vec<Effect> {
        let mut fx = Vec::new();
        for _ in 0..100 {
            for f in self.learner.take_forwards() {
                assert!(self.leader.forwarded(now, f).is_none());
            }
            fx.extend(self.learner.take_effects());
            let props = self.leader.take_proposals();
            if props.is_empty() {
                return fx;
            }
            for (z, data) in props {
                self.leader.apply_delivered(now, z as u64, &data).unwrap();
                self.learner.apply_delivered(now, z as u64, &data).unwrap();
                self.delivered.push((z, data));
            }
        }
        panic!("no quiescence after 100 rounds");
    }
}

fn connect(p: &mut Pair, conn: u64) -> ConnectResponse {
    let req = ConnectRequest {
        timeout_ms: 3000,
        passwd: vec![0; 16],
        ..Default::default()
    };
    p.learner.connect(at(1), conn, "127.0.0.1", 5000, &req);
    assert!(
        p.learner.take_effects().is_empty(),
        "a learner answers a new session only once the leader created it"
    );
    let fx = p.run(at(1));
    match &fx[0] {
        Effect::Send(c, b) if *c == conn => ConnectResponse::decode(&b.head()[4..]).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn learner_sessions_and_writes_go_through_the_leader() {
    let mut p = Pair::new();
    let rsp = connect(&mut p, 9);
    assert_eq!(
        rsp.session_id >> 56,
        2,
        "the learner's id names its sessions"
    );
    assert_eq!(p.delivered[0].0, (1 << 32) | 1, "the epoch's first zxid");
    // A write, a read of it and a second write, pipelined: the read waits
    // for the first write's answer and the second write goes behind it.
    p.learner
        .packet(at(2), 9, &request(1, 1, &create("/a", b"1", 0)));
    p.learner.packet(
        at(2),
        9,
        &request(
            4,
            2,
            &PathWatch {
                path: "/a".into(),
                watch: false,
            }
            .encode(),
        ),
    );
    p.learner
        .packet(at(2), 9, &request(1, 3, &create("/e", b"", 1)));
    assert!(replies(&p.learner.take_effects()).is_empty());
    let fx = replies(&p.run(at(3)));
    let xids: Vec<i32> = fx.iter().map(|r| r.1.xid).collect();
    assert_eq!(xids, vec![1, 2, 3], "answers in request order");
    assert!(fx.iter().all(|r| r.1.err == 0), "{fx:?}");
    let mut r = Reader::new(&fx[1].2);
    assert_eq!(
        r.buffer().unwrap(),
        b"1",
        "the read saw the write before it"
    );
    assert_eq!(
        p.learner.tree().get("/e").unwrap().stat.ephemeral_owner,
        rsp.session_id
    );
    // An error is the leader's, answered by the learner.
    p.learner
        .packet(at(4), 9, &request(1, 4, &create("/a", b"", 0)));
    let fx = replies(&p.run(at(4)));
    assert_eq!(fx[0].1.err, -110, "NodeExists");
    // Closing the session removes its ephemeral on both.
    p.learner.packet(at(5), 9, &request(-11, 5, &[]));
    let fx = p.run(at(5));
    assert!(fx.contains(&Effect::Close(9)));
    assert!(p.learner.tree().get("/e").is_none());
    assert!(p.leader.tree().get("/e").is_none());
    assert_eq!(p.leader.digest(), p.learner.digest());
}

#[test]
fn a_replica_with_a_different_tree_reports_divergence() {
    let mut p = Pair::new();
    connect(&mut p, 9);
    let mut other = DataTree::new();
    other.begin();
    other.create("/stray", b"x".to_vec(), Acl::open_unsafe(), 0, 1, 5, 5);
    other.commit();
    let mut stray = server(3, other);
    stray.set_role(Role::Learner, 0, at(0));
    let (z, data) = p.delivered[0].clone();
    match stray.apply_delivered(at(1), z as u64, &data) {
        Err(Divergence::Digest { zxid, .. }) => assert_eq!(zxid, z),
        other => panic!("{other:?}"),
    }
    // A txn that cannot apply is reported too, never half-applied.
    p.learner
        .packet(at(2), 9, &request(1, 1, &create("/a", b"", 0)));
    p.run(at(2));
    let (z, data) = p.delivered.last().unwrap().clone();
    let mut behind = server(4, DataTree::new());
    behind.set_role(Role::Learner, 0, at(0));
    behind
        .apply_delivered(at(2), z as u64, &data)
        .expect("a create applies to a fresh tree");
    assert!(matches!(
        behind.apply_delivered(at(2), z as u64 + 1, &data),
        Err(Divergence::DoesNotApply(_)) | Err(Divergence::Digest { .. })
    ));
}

#[test]
fn only_the_leader_expires_sessions() {
    let mut p = Pair::new();
    connect(&mut p, 9);
    p.learner
        .packet(at(2), 9, &request(1, 1, &create("/e", b"", 1)));
    p.run(at(2));
    // The learner's clock passes the timeout: nothing happens there.
    p.learner.tick(at(60_000));
    assert!(p.learner.take_forwards().is_empty());
    assert!(p.learner.tree().get("/e").is_some());
    // The leader hears the learner's touches, then stops hearing them.
    p.leader
        .touch_sessions(at(2_000), &p.learner.local_sessions());
    p.leader.tick(at(4_000));
    assert!(
        p.leader.take_proposals().is_empty(),
        "touched sessions live on"
    );
    p.leader.tick(at(20_000));
    let props = p.leader.take_proposals();
    assert_eq!(props.len(), 1, "one CloseSession txn");
    for (z, data) in props {
        p.learner
            .apply_delivered(at(20_000), z as u64, &data)
            .unwrap();
    }
    assert!(p.learner.tree().get("/e").is_none());
    assert!(p.learner.take_effects().contains(&Effect::Close(9)));
}
