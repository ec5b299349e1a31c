//! A fixed budget of seeded simulation runs for CI (about 500 runs, seconds in
//! release mode); scripts/zab-soak.sh runs as many more as you like.

use zkd_zab::sim::{run, Faults, SimConfig};

fn seeds(voters: usize, observers: usize, range: std::ops::Range<u64>, faults: Faults) {
    let mut failures = Vec::new();
    let mut snapshots = 0;
    let mut early = 0;
    let mut past_syncs = 0;
    let runs = range.end - range.start;
    for seed in range {
        let cfg = SimConfig {
            voters,
            observers,
            seed,
            duration_ms: 15_000,
            faults: faults.clone(),
            broken_ack_before_sync: false,
        };
        match run(cfg) {
            Ok(r) => {
                assert!(r.committed > 0, "seed {seed}: nothing committed");
                snapshots += r.snapshots;
                early += r.early_deliveries;
                past_syncs += r.past_syncs;
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // With 3 voters, a forwarding follower's copy and the leader's are a
    // quorum: followers must commit on the leader's word (`Logged`) in
    // these runs, not only on COMMITs. With more voters they never may.
    if voters == 3 {
        assert!(
            early > 0,
            "no learner committed on the leader's word in {runs} runs"
        );
    } else {
        assert_eq!(
            early, 0,
            "a learner of {voters} voters committed without a COMMIT"
        );
    }
    // Followers deliver on COMMITs while their own fsync still runs (a
    // quorum holds those txns): the runs must take that path.
    if runs >= 20 {
        assert!(past_syncs > 0, "no COMMIT passed a sync in {runs} runs");
    }
    // Logs are compacted often in the simulation: a learner that falls
    // behind must regularly be sent the state, not only DIFFs.
    if runs >= 20 && faults.crash > 0.0 {
        assert!(snapshots > 0, "no SNAP with state in {runs} runs");
    }
}

#[test]
fn three_voters_no_faults_commit_everything() {
    let quiet = Faults {
        drop: 0.0,
        duplicate: 0.0,
        crash: 0.0,
        crash_mid_step: 0.0,
        partition: 0.0,
        power_failure: 0.0,
        ..Faults::default()
    };
    seeds(3, 0, 1..6, quiet);
}

#[test]
fn three_voters_under_faults() {
    seeds(3, 0, 1..201, Faults::default());
}

#[test]
fn five_voters_under_faults() {
    seeds(5, 0, 1000..1100, Faults::default());
}

#[test]
fn seven_voters_under_faults() {
    seeds(7, 0, 4000..4050, Faults::default());
}

#[test]
fn three_voters_and_an_observer_under_faults() {
    seeds(3, 1, 2000..2100, Faults::default());
}

#[test]
fn heavy_crashes_and_power_failures_lose_no_acknowledged_write() {
    let f = Faults {
        crash: 0.01,
        crash_mid_step: 0.01,
        power_failure: 0.005,
        ..Faults::default()
    };
    seeds(3, 0, 3000..3100, f);
}

#[test]
fn a_run_replays_from_its_seed() {
    let cfg = SimConfig {
        voters: 3,
        observers: 0,
        seed: 42,
        duration_ms: 10_000,
        faults: Faults::default(),
        broken_ack_before_sync: false,
    };
    let a = run(cfg.clone()).unwrap();
    let b = run(cfg).unwrap();
    assert_eq!(
        (a.steps, a.committed, a.crashes, a.elections),
        (b.steps, b.committed, b.crashes, b.elections)
    );
}
