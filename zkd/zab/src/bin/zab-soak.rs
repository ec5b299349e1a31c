//! Long seeded simulation runs of ZAB ensembles: `zab-soak [SEEDS] [FIRST_SEED]`.
//! Prints one line per failing seed (replay it with the same seed) and a
//! summary; exits 1 if any seed failed.

use zkd_zab::sim::{run, Faults, SimConfig};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seeds = args.first().copied().unwrap_or(200);
    let first = args.get(1).copied().unwrap_or(1);
    let (mut ok, mut failed, mut committed, mut failovers, mut snaps) =
        (0, 0, 0usize, Vec::new(), 0u64);
    let mut past = 0u64;
    for seed in first..first + seeds {
        let shape = [(3, 0), (5, 0), (3, 1), (7, 0)][(seed % 4) as usize];
        let cfg = SimConfig {
            voters: shape.0,
            observers: shape.1,
            seed,
            duration_ms: 20_000,
            faults: Faults {
                power_failure: std::env::var("ZAB_POWER")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.002),
                fsync_ms_max: std::env::var("ZAB_FSYNC")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(5),
                crash: std::env::var("ZAB_CRASH")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(Faults::default().crash),
                crash_mid_step: std::env::var("ZAB_CRASH_MID")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(Faults::default().crash_mid_step),
                ..Faults::default()
            },
            broken_ack_before_sync: std::env::var("ZAB_BROKEN").is_ok(),
        };
        match run(cfg) {
            Ok(r) => {
                ok += 1;
                committed += r.committed;
                snaps += r.snapshots;
                past += r.past_syncs;
                failovers.extend(r.failover_ms);
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {e}");
            }
        }
    }
    failovers.sort();
    let p = |q: f64| {
        failovers
            .get(((failovers.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{ok} seeds ok, {failed} failed; {committed} txns committed; {snaps} snapshots sent; {past} COMMITs delivered during a sync; simulated failover ms p50={} p99={} max={}",
        p(0.5),
        p(0.99),
        failovers.last().copied().unwrap_or(0)
    );
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
