//! What ensemble members send each other besides ZAB's own messages:
//! forwarded requests and proposals decode totally and round-trip, a leader
//! prepares any forwarded request without panicking, and a learner fed any
//! proposal either applies it or reports divergence, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zkd_core::server::{Config, Forward, Now, Proposal, Role, Server};
use zkd_core::tree::DataTree;

fuzz_target!(|data: &[u8]| {
    let now = Now {
        wall_ms: 1_000,
        mono_ms: 1_000,
    };
    let Some((&tag, body)) = data.split_first() else {
        return;
    };
    if tag % 2 == 0 {
        if let Ok(f) = Forward::decode(body) {
            assert_eq!(Forward::decode(&f.encode()).unwrap(), f);
            let mut leader = Server::new(Config::new(1, 100), DataTree::new(), 0, Vec::new(), now, 1);
            leader.set_role(Role::Leader, 1, now);
            let _ = leader.forwarded(now, f);
            for (z, p) in leader.take_proposals() {
                let mut learner =
                    Server::new(Config::new(2, 100), DataTree::new(), 0, Vec::new(), now, 2);
                learner.set_role(Role::Learner, 0, now);
                // What one correct leader prepared applies on a fresh replica.
                learner.apply_delivered(now, z as u64, &p).unwrap();
                assert_eq!(learner.digest().1, leader.digest().1);
            }
        }
    } else {
        if let Ok(p) = Proposal::decode(body) {
            assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
        }
        let mut learner = Server::new(Config::new(2, 100), DataTree::new(), 0, Vec::new(), now, 2);
        learner.set_role(Role::Learner, 0, now);
        let _ = learner.apply_delivered(now, 1, body);
    }
});
