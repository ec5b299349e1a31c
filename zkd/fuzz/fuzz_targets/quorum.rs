//! Quorum frames: decoding is total and round-trips, and a peer fed the
//! decoded messages never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zkd_zab::codec::{decode, encode};
use zkd_zab::peer::{Config, Durable, Input, Peer};

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        id: 1,
        voters: vec![1, 2, 3],
        observers: vec![4],
        tick_ms: 50,
        init_limit: 10,
        sync_limit: 5,
        finalize_wait_ms: 100,
        broken_ack_before_sync: false,
        // Tiny, so fuzzed streams reach compaction and SNAP handling.
        snap_count: 5,
        snap_bytes: 64,
        log_keep: 2,
    };
    let mut peer = Peer::new(cfg, Durable::default(), 0);
    let mut now = 0;
    // The input is a sequence of frames: 1-byte sender, 2-byte length, body.
    let mut rest = data;
    while rest.len() >= 3 {
        let from = (rest[0] % 4) as u64 + 1;
        let n = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        rest = &rest[3..];
        let body = &rest[..n.min(rest.len())];
        rest = &rest[n.min(rest.len())..];
        if let Ok(env) = decode(body) {
            let again = encode(&env);
            assert_eq!(decode(&again[4..]).unwrap(), env);
            let _ = peer.step(Input::Msg(from, env));
        }
        now += 60;
        let _ = peer.step(Input::Tick(now));
    }
});
