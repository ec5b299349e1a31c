//! Each durability rule of zab.md as a test on the order of one peer's
//! outputs, named after the ZooKeeper bug it prevents. The peer is driven by
//! hand: the outputs must put the persist and the sync barrier before the
//! message that promises durability.

use zkd_zab::peer::{Config, Durable, Envelope, Input, Output, Peer, Persist};
use zkd_zab::types::*;

fn cfg(id: Id) -> Config {
    Config {
        id,
        voters: vec![1, 2, 3],
        observers: vec![],
        tick_ms: 50,
        init_limit: 10,
        sync_limit: 5,
        finalize_wait_ms: 100,
        broken_ack_before_sync: false,
        snap_count: 1_000_000,
        snap_bytes: usize::MAX,
        log_keep: 500,
    }
}

fn vote(leader: Id, zxid: Zxid, epoch: u64, round: u64) -> Envelope {
    Envelope {
        conn: 0,
        seq: 0,
        msg: Msg::Vote(Vote {
            leader,
            zxid,
            peer_epoch: epoch,
            round,
            state: PeerState::Looking,
        }),
    }
}

/// Peer 1 with `d` on disk, made to follow peer 3 (which has more): returns
/// the peer and the connection number of its stream to the leader.
fn follower(d: Durable) -> (Peer, u64) {
    let mut p = Peer::new(cfg(1), d, 0);
    p.step(Input::Tick(0));
    p.step(Input::Msg(3, vote(3, zxid(20, 9), 20, 1)));
    p.step(Input::Msg(2, vote(3, zxid(20, 9), 20, 1)));
    let outs = p.step(Input::Tick(500));
    let conn = outs
        .iter()
        .find_map(|o| match o {
            Output::Send(
                3,
                Envelope {
                    conn,
                    msg: Msg::FollowerInfo { .. },
                    ..
                },
            ) => Some(*conn),
            _ => None,
        })
        .expect("follower info sent to the elected leader");
    (p, conn)
}

/// One stream message from the leader (peer 3) to the follower.
fn from_leader(p: &mut Peer, conn: u64, seq: u64, msg: Msg) -> Vec<Output> {
    p.step(Input::Msg(3, Envelope { conn, seq, msg }))
}

fn pos(outs: &[Output], f: impl Fn(&Output) -> bool) -> usize {
    outs.iter()
        .position(f)
        .unwrap_or_else(|| panic!("expected output missing in {outs:?}"))
}

/// The zxid a leader's write asks its own sync for.
fn own_sync(outs: &[Output]) -> Zxid {
    outs.iter()
        .find_map(|o| match o {
            Output::SyncThenAck(z) => Some(*z),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a write asks for the leader's own sync: {outs:?}"))
}

fn delivers(outs: &[Output]) -> bool {
    outs.iter()
        .any(|o| matches!(o, Output::Deliver(_) | Output::DeliverCommitted(_)))
}

/// A client write at a leader whose own fsync then finishes: the outputs
/// of both steps.
fn write_synced(p: &mut Peer, data: Vec<u8>) -> Vec<Output> {
    let mut outs = p.step(Input::Write(data));
    outs.extend(p.step(Input::Synced(own_sync(&outs))));
    outs
}

fn last_sync_before(outs: &[Output], i: usize) -> bool {
    outs[..i].contains(&Output::Sync)
}

#[test]
fn zookeeper_1653_accepted_epoch_durable_before_ackepoch() {
    let (mut p, conn) = follower(Durable::default());
    let outs = from_leader(&mut p, conn, 1, Msg::LeaderInfo { epoch: 10 });
    let persist = pos(&outs, |o| *o == Output::Persist(Persist::AcceptedEpoch(10)));
    let ack = pos(&outs, |o| {
        matches!(
            o,
            Output::Send(
                3,
                Envelope {
                    msg: Msg::AckEpoch { .. },
                    ..
                }
            )
        )
    });
    assert!(
        persist < ack && outs[persist..ack].contains(&Output::Sync),
        "{outs:?}"
    );
}

#[test]
fn zookeeper_3911_and_4394_diff_durable_then_current_epoch_then_ack_newleader() {
    let (mut p, conn) = follower(Durable::default());
    from_leader(&mut p, conn, 1, Msg::LeaderInfo { epoch: 10 });
    let txns = vec![
        Txn {
            zxid: zxid(9, 1),
            data: b"a".to_vec().into(),
        },
        Txn {
            zxid: zxid(9, 2),
            data: b"b".to_vec().into(),
        },
    ];
    let mut outs = from_leader(&mut p, conn, 2, Msg::Sync(Sync::Diff(txns.clone())));
    outs.extend(from_leader(&mut p, conn, 3, Msg::NewLeader { epoch: 10 }));
    let append = pos(&outs, |o| {
        *o == Output::Persist(Persist::Append(txns.clone()))
    });
    let epoch = pos(&outs, |o| *o == Output::Persist(Persist::CurrentEpoch(10)));
    let ack = pos(&outs, |o| {
        matches!(
            o,
            Output::Send(
                3,
                Envelope {
                    msg: Msg::AckNewLeader { .. },
                    ..
                }
            )
        )
    });
    // txns, sync, currentEpoch, sync, ack
    assert!(
        append < epoch && outs[append..epoch].contains(&Output::Sync),
        "{outs:?}"
    );
    assert!(
        epoch < ack && outs[epoch..ack].contains(&Output::Sync),
        "{outs:?}"
    );
}

#[test]
fn zookeeper_2678_snap_durable_before_ack_newleader() {
    let (mut p, conn) = follower(Durable::default());
    from_leader(&mut p, conn, 1, Msg::LeaderInfo { epoch: 10 });
    let log = vec![Txn {
        zxid: zxid(9, 2),
        data: b"a".to_vec().into(),
    }];
    let snap = Msg::Sync(Sync::Snap {
        upto: zxid(9, 1),
        state: b"tree".to_vec(),
        log: log.clone(),
    });
    let mut outs = from_leader(&mut p, conn, 2, snap);
    outs.extend(from_leader(&mut p, conn, 3, Msg::NewLeader { epoch: 10 }));
    let replace = pos(&outs, |o| {
        *o == Output::Persist(Persist::Snapshot {
            upto: zxid(9, 1),
            state: std::sync::Arc::new(b"tree".to_vec()),
            log: log.clone(),
        })
    });
    let ack = pos(&outs, |o| {
        matches!(
            o,
            Output::Send(
                3,
                Envelope {
                    msg: Msg::AckNewLeader { .. },
                    ..
                }
            )
        )
    });
    assert!(
        replace < ack && last_sync_before(&outs[replace..], ack - replace),
        "{outs:?}"
    );
}

/// A follower synced with an empty DIFF and serving (UPTODATE seen,
/// stream messages 1-4), and the first txn its leader will propose.
fn serving_follower() -> (Peer, u64, Txn) {
    let (mut p, conn) = follower(Durable::default());
    from_leader(&mut p, conn, 1, Msg::LeaderInfo { epoch: 10 });
    from_leader(&mut p, conn, 2, Msg::Sync(Sync::Diff(vec![])));
    from_leader(&mut p, conn, 3, Msg::NewLeader { epoch: 10 });
    from_leader(&mut p, conn, 4, Msg::UpToDate { committed: 0 });
    let t = Txn {
        zxid: zxid(10, 1),
        data: b"x".to_vec().into(),
    };
    (p, conn, t)
}

#[test]
fn proposal_durable_before_its_ack() {
    let (mut p, conn, t) = serving_follower();
    let outs = from_leader(&mut p, conn, 5, Msg::Proposal(t.clone()));
    let append = pos(&outs, |o| {
        *o == Output::Persist(Persist::Append(vec![t.clone()]))
    });
    let ack = pos(&outs, |o| {
        matches!(
            o,
            Output::Send(
                3,
                Envelope {
                    msg: Msg::Ack { .. },
                    ..
                }
            )
        )
    });
    assert!(
        append < ack && outs[append..ack].contains(&Output::Sync),
        "{outs:?}"
    );
    // And a commit delivers it, without waiting for that sync: a quorum
    // holds it durably already.
    let outs = from_leader(&mut p, conn, 6, Msg::Commit { zxid: t.zxid });
    let deliver = pos(&outs, |o| *o == Output::DeliverCommitted(t.clone()));
    assert!(
        outs[..=deliver].iter().all(Output::may_pass_sync),
        "{outs:?}"
    );
}

/// A follower that delivered one txn (epoch 5) and was told of epoch 10:
/// the peer, its stream to the leader, and the txn.
fn follower_that_delivered_one_txn() -> (Peer, u64, Txn) {
    let delivered = Txn {
        zxid: zxid(5, 1),
        data: b"kept".to_vec().into(),
    };
    let d = Durable {
        accepted_epoch: 5,
        current_epoch: 5,
        log: vec![delivered.clone()],
        applied: delivered.zxid,
        base: 0,
    };
    let (mut p, conn) = follower(d);
    from_leader(&mut p, conn, 1, Msg::LeaderInfo { epoch: 10 });
    (p, conn, delivered)
}

#[test]
fn zookeeper_1154_a_snap_never_cuts_below_what_was_delivered() {
    let (mut p, conn, delivered) = follower_that_delivered_one_txn();
    // A state from before our delivered txn, whose log has a different
    // txn under that zxid: installing it would lose what we delivered.
    let other = Msg::Sync(Sync::Snap {
        upto: 0,
        state: vec![],
        log: vec![Txn {
            zxid: delivered.zxid,
            data: b"different".to_vec().into(),
        }],
    });
    let outs = from_leader(&mut p, conn, 2, other);
    assert!(
        outs.iter().any(|o| matches!(o, Output::Diverged(_))),
        "{outs:?}"
    );
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::Persist(Persist::Snapshot { .. }))));
}

#[test]
fn an_older_state_is_installed_only_with_the_txns_we_delivered_after_it() {
    let (mut p, conn, delivered) = follower_that_delivered_one_txn();
    let snap = Msg::Sync(Sync::Snap {
        upto: 0,
        state: b"empty tree".to_vec(),
        log: vec![delivered.clone()],
    });
    let outs = from_leader(&mut p, conn, 2, snap);
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Persist(Persist::Snapshot { upto: 0, .. }))),
        "{outs:?}"
    );
    // The delivered txn is delivered again once the leader says so.
    from_leader(&mut p, conn, 3, Msg::NewLeader { epoch: 10 });
    let outs = from_leader(
        &mut p,
        conn,
        4,
        Msg::UpToDate {
            committed: delivered.zxid,
        },
    );
    assert!(outs.contains(&Output::Deliver(delivered)), "{outs:?}");
}

/// A learner with `last_zxid` and no epoch yet introduces itself to leader
/// `p` on stream `conn` (FOLLOWERINFO, then ACKEPOCH): the leader's outputs.
fn learner_joins(
    p: &mut Peer,
    from: Id,
    conn: u64,
    observer: bool,
    last_zxid: Zxid,
) -> Vec<Output> {
    let msgs = [
        Msg::FollowerInfo {
            accepted_epoch: 0,
            last_zxid,
            observer,
        },
        Msg::AckEpoch {
            current_epoch: 0,
            last_zxid,
        },
    ];
    let mut outs = Vec::new();
    for (seq, msg) in (1..).zip(msgs) {
        outs.extend(p.step(Input::Msg(from, Envelope { conn, seq, msg })));
    }
    outs
}

/// A single-voter leader with one observer, which has written `writes`
/// txns; returns the leader and what the observer is sent when it connects
/// with `observer_last` as its last zxid.
fn leader_syncing_observer(c: Config, writes: u32, observer_last: Zxid) -> (Peer, Vec<Output>) {
    let c = Config {
        voters: vec![1],
        observers: vec![2],
        ..c
    };
    let mut p = Peer::new(c, Durable::default(), 0);
    p.step(Input::Tick(0));
    p.step(Input::Tick(200));
    assert!(p.is_active_leader());
    for i in 0..writes {
        write_synced(&mut p, format!("w{i}").into_bytes());
    }
    let outs = learner_joins(&mut p, 2, 77, true, observer_last);
    (p, outs)
}

#[test]
fn compaction_keeps_the_newest_delivered_txns_and_moves_the_base() {
    let c = Config {
        snap_count: 10,
        log_keep: 3,
        ..cfg(1)
    };
    let mut p = Peer::new(
        Config {
            voters: vec![1],
            ..c
        },
        Durable::default(),
        0,
    );
    p.step(Input::Tick(0));
    p.step(Input::Tick(200));
    let mut compacted = Vec::new();
    for i in 0..25 {
        for o in write_synced(&mut p, format!("w{i}").into_bytes()) {
            if let Output::Persist(Persist::Compact(z)) = o {
                compacted.push(z);
            }
        }
    }
    let e = p.current_epoch();
    // At 10 delivered, 7 go; again at 10 (3 kept + 7 new); and again.
    assert_eq!(compacted, vec![zxid(e, 7), zxid(e, 14), zxid(e, 21)]);
    assert_eq!(p.log_base(), zxid(e, 21));
    assert_eq!(p.log_len(), 4);
    assert_eq!(p.last_zxid(), zxid(e, 25));
    assert_eq!(p.delivered_zxid(), zxid(e, 25));
    // A restart from what was persisted comes back at the same place.
    let d = Durable {
        accepted_epoch: e,
        current_epoch: e,
        log: vec![Txn {
            zxid: zxid(e, 22),
            data: Vec::new().into(),
        }],
        applied: zxid(e, 22),
        base: zxid(e, 21),
    };
    let q = Peer::new(cfg(1), d, 0);
    assert_eq!(q.last_zxid(), zxid(e, 22));
    assert_eq!(q.log_base(), zxid(e, 21));
}

#[test]
fn a_learner_behind_the_base_gets_the_state_and_one_at_it_a_diff() {
    let c = Config {
        snap_count: 10,
        log_keep: 3,
        ..cfg(1)
    };
    let (p, outs) = leader_syncing_observer(c.clone(), 12, 0);
    let base = p.log_base();
    assert!(base > 0);
    let snap = outs
        .iter()
        .find_map(|o| match o {
            Output::SendSnap(
                2,
                Envelope {
                    msg: Msg::Sync(Sync::Snap { upto, state, log }),
                    ..
                },
            ) => Some((*upto, state.clone(), log.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SNAP: {outs:?}"));
    // The state is everything delivered (the runtime fills it in); no
    // undelivered txns remain on a single-voter leader.
    assert_eq!(snap, (p.delivered_zxid(), vec![], vec![]));
    let (p, outs) = leader_syncing_observer(c, 12, base);
    let diff = outs
        .iter()
        .find_map(|o| match o {
            Output::Send(
                2,
                Envelope {
                    msg: Msg::Sync(Sync::Diff(t)),
                    ..
                },
            ) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no DIFF: {outs:?}"));
    assert_eq!(diff.len(), p.log_len());
    assert_eq!(diff.last().map(|t| t.zxid), Some(p.last_zxid()));
}

/// Not a durability rule but a liveness one: a learner being synced is
/// silent until its NEWLEADER ack (its state is read, sent, installed),
/// and the leader keeps it for initLimit + syncLimit ticks meanwhile, as
/// ZooKeeper does; a learner silent longer is dropped.
#[test]
fn a_learner_has_init_plus_sync_limit_to_sync_then_sync_limit() {
    let c = cfg(1);
    let (limit_ms, sync_ms) = (
        (c.init_limit + c.sync_limit) * c.tick_ms,
        c.sync_limit * c.tick_ms,
    );
    // The observer (2) acks NEWLEADER on its connection.
    let ack_newleader = |p: &mut Peer| {
        let msg = Msg::AckNewLeader {
            epoch: p.current_epoch(),
        };
        p.step(Input::Msg(
            2,
            Envelope {
                conn: 77,
                seq: 3,
                msg,
            },
        ))
    };
    let sent_to_2 = |outs: &[Output], kind: fn(&Msg) -> bool| {
        sent(outs, |m| kind(m).then_some(()))
            .iter()
            .any(|(to, _)| *to == 2)
    };
    for (silent_ms, kept) in [(sync_ms + 100, true), (limit_ms + 100, false)] {
        let (mut p, _) = leader_syncing_observer(c.clone(), 3, 0);
        // The observer joined at 200 ms; the leader ticks on meanwhile.
        let mut t = 200;
        while t < 200 + silent_ms {
            t += c.tick_ms;
            p.step(Input::Tick(t));
        }
        let outs = ack_newleader(&mut p);
        let up_to_date = sent_to_2(&outs, |m| matches!(m, Msg::UpToDate { .. }));
        assert_eq!(up_to_date, kept, "silent {silent_ms} ms: {outs:?}");
    }
    // Once synced, syncLimit is its limit: pinged until then, not after.
    let (mut p, _) = leader_syncing_observer(c.clone(), 3, 0);
    ack_newleader(&mut p);
    let (mut early, mut late) = (false, false);
    let mut t = 200;
    while t < 200 + sync_ms + 200 {
        t += c.tick_ms;
        let pinged = sent_to_2(&p.step(Input::Tick(t)), |m| matches!(m, Msg::Ping { .. }));
        if t <= 200 + sync_ms {
            early |= pinged;
        } else {
            late |= pinged;
        }
    }
    assert!(
        early && !late,
        "pinged before the limit {early}, after {late}"
    );
}

#[test]
fn a_gap_in_the_stream_is_never_applied() {
    let (mut p, conn) = follower(Durable::default());
    from_leader(&mut p, conn, 1, Msg::LeaderInfo { epoch: 10 });
    // seq 3 before seq 2: the stream broke; the follower must not log it.
    let outs = from_leader(&mut p, conn, 3, Msg::NewLeader { epoch: 10 });
    assert!(
        outs.iter().any(|o| matches!(o, Output::Looking(_))),
        "{outs:?}"
    );
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::Persist(Persist::CurrentEpoch(_)))));
}

/// The leader syncs no learner (a DIFF or SNAP, then NEWLEADER, after
/// which the learner records the epoch as its current one) before a quorum
/// has accepted the epoch, as ZooKeeper's leader waits for a quorum of
/// ACKEPOCHs. A learner synced earlier could hold a current epoch that no
/// quorum accepted, and later win an election with too short a log.
#[test]
fn no_learner_is_synced_before_a_quorum_accepted_the_epoch() {
    let c = Config {
        voters: vec![1, 2, 3, 4, 5],
        ..cfg(5)
    };
    let mut p = Peer::new(c, Durable::default(), 0);
    p.step(Input::Tick(0));
    p.step(Input::Msg(3, vote(5, 0, 0, 1)));
    p.step(Input::Msg(4, vote(5, 0, 0, 1)));
    p.step(Input::Tick(500));
    let synced = |outs: &[Output]| -> Vec<Id> {
        sent(outs, |m| matches!(m, Msg::NewLeader { .. }).then_some(()))
            .into_iter()
            .map(|(to, ())| to)
            .collect()
    };
    let from = |p: &mut Peer, f: Id, seq: u64, msg: Msg| {
        p.step(Input::Msg(
            f,
            Envelope {
                conn: 10 + f,
                seq,
                msg,
            },
        ))
    };
    let info = Msg::FollowerInfo {
        accepted_epoch: 0,
        last_zxid: 0,
        observer: false,
    };
    for f in [1, 2] {
        from(&mut p, f, 1, info.clone());
    }
    let ack = Msg::AckEpoch {
        current_epoch: 0,
        last_zxid: 0,
    };
    // The leader and learner 1: two of five.
    let outs = from(&mut p, 1, 2, ack.clone());
    assert_eq!(synced(&outs), Vec::<Id>::new(), "{outs:?}");
    // Learner 2 makes three: both are synced now.
    let outs = from(&mut p, 2, 2, ack.clone());
    assert_eq!(synced(&outs), [1, 2], "{outs:?}");
    // A learner that comes after the quorum is synced at once.
    from(&mut p, 3, 1, info);
    let outs = from(&mut p, 3, 2, ack);
    assert_eq!(synced(&outs), [3], "{outs:?}");
}

#[test]
fn leader_counts_itself_only_after_its_own_sync() {
    // A single-voter ensemble commits on its own ack alone.
    let c = Config {
        voters: vec![1],
        ..cfg(1)
    };
    let mut p = Peer::new(c, Durable::default(), 0);
    p.step(Input::Tick(0));
    p.step(Input::Tick(200));
    assert!(p.is_active_leader());
    let outs = p.step(Input::Write(b"w".to_vec()));
    let append = pos(&outs, |o| matches!(o, Output::Persist(Persist::Append(_))));
    let own = pos(&outs, |o| matches!(o, Output::SyncThenAck(_)));
    assert!(append < own && !delivers(&outs), "{outs:?}");
    let outs = p.step(Input::Synced(own_sync(&outs)));
    assert!(delivers(&outs), "{outs:?}");
}

/// Leader 3 of voters 1, 2, 3, with both followers synced (acked
/// NEWLEADER); returns it and each follower's stream number.
fn leader_with_two_followers() -> (Peer, [u64; 2]) {
    let mut p = Peer::new(cfg(3), Durable::default(), 0);
    p.step(Input::Tick(0));
    p.step(Input::Msg(1, vote(3, 0, 0, 1)));
    p.step(Input::Msg(2, vote(3, 0, 0, 1)));
    p.step(Input::Tick(500));
    let conns = [11, 12];
    let mut epoch = None;
    for (f, conn) in [1, 2].into_iter().zip(conns) {
        for o in learner_joins(&mut p, f, conn, false, 0) {
            if let Output::Send(
                _,
                Envelope {
                    msg: Msg::LeaderInfo { epoch: e },
                    ..
                },
            ) = o
            {
                epoch = Some(e);
            }
        }
    }
    let epoch = epoch.expect("the leader sent its epoch");
    for (f, conn) in [1, 2].into_iter().zip(conns) {
        let msg = Msg::AckNewLeader { epoch };
        p.step(Input::Msg(f, Envelope { conn, seq: 3, msg }));
    }
    assert!(p.is_active_leader());
    (p, conns)
}

#[test]
fn two_followers_commit_without_the_leaders_own_sync_one_does_not() {
    let (mut p, conns) = leader_with_two_followers();
    let z = own_sync(&p.step(Input::Write(b"w".to_vec())));
    // One follower's ack with the leader's unsynced copy is no quorum.
    let outs = ack_from(&mut p, 1, conns[0], z);
    assert!(!delivers(&outs), "{outs:?}");
    // The second one is, with the leader's fsync still running.
    let outs = ack_from(&mut p, 2, conns[1], z);
    assert!(delivers(&outs), "{outs:?}");
    // Its sync finishing later delivers nothing twice.
    let outs = p.step(Input::Synced(z));
    assert!(!delivers(&outs), "{outs:?}");
}

/// Follower `f`'s first ack (of `z`) on its stream `conn`, to the leader.
fn ack_from(p: &mut Peer, f: Id, conn: u64, z: Zxid) -> Vec<Output> {
    nth_ack_from(p, f, conn, 4, z)
}

/// The same as the stream's message `seq`.
fn nth_ack_from(p: &mut Peer, f: Id, conn: u64, seq: u64, z: Zxid) -> Vec<Output> {
    let msg = Msg::Ack { zxid: z };
    p.step(Input::Msg(f, Envelope { conn, seq, msg }))
}

#[test]
fn one_follower_and_the_leaders_own_sync_commit() {
    let (mut p, conns) = leader_with_two_followers();
    let z = own_sync(&p.step(Input::Write(b"w".to_vec())));
    let outs = p.step(Input::Synced(z));
    assert!(!delivers(&outs), "{outs:?}");
    let outs = ack_from(&mut p, 1, conns[0], z);
    assert!(delivers(&outs), "{outs:?}");
}

/// Not a durability rule but the order ZooKeeper's leader keeps: the
/// COMMIT leaves for every follower before the leader applies the txn
/// itself, so a follower's client never waits for the leader's apply.
#[test]
fn the_leader_sends_commit_before_it_delivers() {
    let (mut p, conns) = leader_with_two_followers();
    let z = own_sync(&p.step(Input::Write(b"w".to_vec())));
    p.step(Input::Synced(z));
    let outs = ack_from(&mut p, 1, conns[0], z);
    let deliver = pos(&outs, |o| matches!(o, Output::Deliver(_)));
    for f in [1, 2] {
        let commit = pos(&outs, |o| {
            matches!(o, Output::Send(to, Envelope { msg: Msg::Commit { zxid }, .. })
                if *to == f && *zxid == z)
        });
        assert!(commit < deliver, "{outs:?}");
    }
}

/// A follower's own durable copy and the leader's are a quorum of three
/// voters: the leader tells the follower that forwarded a txn when its
/// own log holds it, and only while the txn waits for acks.
#[test]
fn the_leader_tells_only_the_forwarding_follower_that_its_log_holds_a_txn() {
    let (mut p, conns) = leader_with_two_followers();
    let logged_to = |outs: &[Output]| {
        sent(outs, |m| match m {
            Msg::Logged { zxid } => Some(*zxid),
            _ => None,
        })
    };
    // Forwarded by follower 2: it alone hears of the leader's sync.
    let z = own_sync(&p.step(Input::Forwarded(2, b"a".to_vec())));
    let outs = p.step(Input::Synced(z));
    assert_eq!(logged_to(&outs), [(2, z)], "{outs:?}");
    let outs = ack_from(&mut p, 2, conns[1], z);
    assert!(delivers(&outs), "{outs:?}");
    // Nobody forwarded it: nobody hears.
    let z = own_sync(&p.step(Input::Write(b"b".to_vec())));
    let outs = p.step(Input::Synced(z));
    assert_eq!(logged_to(&outs), [], "{outs:?}");
    nth_ack_from(&mut p, 1, conns[0], 5, z);
    // Already committed by the followers' acks when the leader's own sync
    // ends: the COMMIT said it all.
    let z = own_sync(&p.step(Input::Forwarded(1, b"c".to_vec())));
    nth_ack_from(&mut p, 1, conns[0], 6, z);
    let outs = nth_ack_from(&mut p, 2, conns[1], 5, z);
    assert!(delivers(&outs), "{outs:?}");
    let outs = p.step(Input::Synced(z));
    assert_eq!(logged_to(&outs), [], "{outs:?}");
}

/// To whom `outs` sends what `pick` takes from a message (those it takes).
fn sent<T>(outs: &[Output], pick: impl Fn(&Msg) -> Option<T>) -> Vec<(Id, T)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(to, Envelope { msg, .. }) => Some((*to, pick(msg)?)),
            _ => None,
        })
        .collect()
}

/// Which followers `outs` sends a COMMIT of `z`.
fn commits_to(outs: &[Output], z: Zxid) -> Vec<Id> {
    sent(outs, |m| match m {
        Msg::Commit { zxid } => Some(*zxid),
        _ => None,
    })
    .into_iter()
    .filter(|&(_, zxid)| zxid == z)
    .map(|(to, _)| to)
    .collect()
}

/// A serving follower told that the leader's log holds a txn commits it
/// on its own (see the follower side below), so the leader sends it no
/// COMMIT of it; the other follower gets one. A follower told so before
/// its UPTODATE ignored the word, and gets the COMMIT.
#[test]
fn no_commit_goes_to_a_follower_told_that_the_leaders_log_holds_the_txn() {
    let (mut p, conns) = leader_with_two_followers();
    let z = own_sync(&p.step(Input::Forwarded(2, b"a".to_vec())));
    p.step(Input::Synced(z));
    let outs = ack_from(&mut p, 1, conns[0], z);
    assert!(delivers(&outs), "{outs:?}");
    assert_eq!(commits_to(&outs, z), [1], "{outs:?}");
    // Follower 2 forwards a write, then comes back on a new stream and is
    // synced (NEWLEADER sent) but not yet UPTODATE when the leader's log
    // holds the write.
    let z = own_sync(&p.step(Input::Forwarded(2, b"b".to_vec())));
    learner_joins(&mut p, 2, 13, false, 0);
    p.step(Input::Synced(z));
    let outs = nth_ack_from(&mut p, 1, conns[0], 5, z);
    assert!(delivers(&outs), "{outs:?}");
    assert_eq!(commits_to(&outs, z), [1, 2], "{outs:?}");
}

/// The follower side: told that the leader's log holds a txn, it
/// delivers it only behind a sync of its own log, and never a txn it has
/// not logged.
#[test]
fn a_follower_commits_on_the_leaders_word_only_behind_its_own_sync() {
    let (mut p, conn, t) = serving_follower();
    from_leader(&mut p, conn, 5, Msg::Proposal(t.clone()));
    // Told of more than it logged: it delivers what it has.
    let outs = from_leader(&mut p, conn, 6, Msg::Logged { zxid: zxid(10, 2) });
    let deliver = pos(&outs, |o| *o == Output::Deliver(t.clone()));
    assert!(last_sync_before(&outs, deliver), "{outs:?}");
    // Nor may it pass a sync in progress: the runtime drops a sync whose
    // writes an earlier one in progress already holds (its own copy of
    // the txn), and only waiting for that one keeps it behind our sync.
    assert!(!outs[deliver].may_pass_sync(), "{outs:?}");
    assert_eq!(
        outs.iter()
            .filter(|o| matches!(o, Output::Deliver(_)))
            .count(),
        1
    );
    // The COMMIT that follows delivers nothing twice.
    let outs = from_leader(&mut p, conn, 7, Msg::Commit { zxid: t.zxid });
    assert!(!delivers(&outs), "{outs:?}");
}

#[test]
fn acceptedepoch_from_an_older_leader_is_refused() {
    let d = Durable {
        accepted_epoch: 12,
        current_epoch: 11,
        log: vec![],
        applied: 0,
        base: 0,
    };
    let (mut p, conn) = follower(d);
    let outs = from_leader(&mut p, conn, 1, Msg::LeaderInfo { epoch: 10 });
    assert!(outs.iter().any(|o| matches!(o, Output::Looking(_))));
    assert!(!outs.iter().any(|o| matches!(
        o,
        Output::Send(
            _,
            Envelope {
                msg: Msg::AckEpoch { .. },
                ..
            }
        )
    )));
}
