//! Four-letter words answered from the core's state, in the reference's
//! output formats (`srvr`, `stat`, `mntr`, ... are parsed by monitoring
//! scripts, so field names and order follow ZooKeeper's).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::runtime::Core;

pub const VERSION: &str = concat!("3.9.0-zkd-", env!("CARGO_PKG_VERSION"));

fn latency_ms(core: &Core) -> (u64, f64, u64) {
    let m = &core.metrics;
    let n = m.latency_count.load(Ordering::Relaxed);
    if n == 0 {
        return (0, 0.0, 0);
    }
    let avg = m.latency_sum_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0;
    (
        m.latency_min_us.load(Ordering::Relaxed) / 1000,
        avg,
        m.latency_max_us.load(Ordering::Relaxed) / 1000,
    )
}

fn fmt_avg(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_owned()
    }
}

fn mode(core: &Core) -> &'static str {
    use zkd_zab::types::PeerState;
    let Some(z) = core.zab.as_ref() else {
        return "standalone";
    };
    if !z.serving {
        return "looking";
    }
    match z.peer.state() {
        PeerState::Leading => "leader",
        PeerState::Following => "follower",
        PeerState::Observing => "observer",
        PeerState::Looking => "looking",
    }
}

/// What ZooKeeper answers `srvr` and `stat` with between leaders.
const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests\n";

fn serving(core: &Core) -> bool {
    core.zab.as_ref().is_none_or(|z| z.serving)
}

/// `mntr` rows for an ensemble member: ZooKeeper's leader counts, and the
/// tree digest replicas compare.
fn ensemble_rows(core: &Core) -> Vec<(&'static str, String)> {
    use zkd_zab::types::PeerState;
    let Some(z) = core.zab.as_ref() else {
        return Vec::new();
    };
    let state = z.peer.state();
    let mut rows = vec![(
        "zk_peer_state",
        match (state, z.serving) {
            (PeerState::Leading, true) => "leading - broadcast",
            (PeerState::Following, true) => "following - broadcast",
            (PeerState::Observing, true) => "observing - broadcast",
            (PeerState::Looking, _) => "looking - election",
            (PeerState::Leading, false) => "leading - synchronization",
            (_, false) => "following - synchronization",
        }
        .to_owned(),
    )];
    if state == PeerState::Leading {
        let l = z.peer.learners();
        let followers = l.iter().filter(|(_, obs, _)| !obs).count();
        let synced_f = l.iter().filter(|(_, obs, s)| !obs && *s).count();
        let synced_o = l.iter().filter(|(_, obs, s)| *obs && *s).count();
        rows.push(("zk_learners", l.len().to_string()));
        rows.push(("zk_followers", followers.to_string()));
        rows.push(("zk_synced_followers", synced_f.to_string()));
        rows.push(("zk_synced_non_voting_followers", "0".to_owned()));
        rows.push(("zk_synced_observers", synced_o.to_string()));
        rows.push(("zk_pending_syncs", "0".to_owned()));
    }
    rows.push(("zk_zab_epoch", z.peer.current_epoch().to_string()));
    rows.push(("zk_zab_log_txns", z.peer.log_len().to_string()));
    rows.push(("zk_zab_log_base", format!("0x{:x}", z.peer.log_base())));
    let (zxid, digest) = core.server.digest();
    rows.push(("zk_tree_digest_zxid", format!("0x{zxid:x}")));
    rows.push(("zk_tree_digest", format!("{digest:016x}")));
    rows
}

fn srvr_body(core: &Core, out: &mut String) {
    let (min, avg, max) = latency_ms(core);
    let s = &core.server;
    let _ = writeln!(out, "Latency min/avg/max: {min}/{}/{max}", fmt_avg(avg));
    let _ = writeln!(out, "Received: {}", s.counters.packets_received);
    let _ = writeln!(out, "Sent: {}", s.counters.packets_sent);
    let _ = writeln!(out, "Connections: {}", s.connection_count());
    let _ = writeln!(out, "Outstanding: {}", core.outstanding());
    let _ = writeln!(out, "Zxid: 0x{:x}", s.last_zxid());
    let _ = writeln!(out, "Mode: {}", mode(core));
    let _ = writeln!(out, "Node count: {}", s.tree().node_count_reported());
}

fn peer(c: &zkd_core::server::ConnInfo) -> String {
    if c.ip.contains(':') {
        format!("/[{}]:{}[1]", c.ip, c.port)
    } else {
        format!("/{}:{}[1]", c.ip, c.port)
    }
}

fn fd_counts() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| x.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    (open, max)
}

pub fn answer(core: &mut Core, word: &str) -> String {
    let mut out = String::new();
    let cfg = core.cfg.clone();
    match word {
        "ruok" => out.push_str("imok"),
        "isro" => out.push_str(if core.server.is_read_only() {
            "ro"
        } else {
            "rw"
        }),
        "srvr" | "stat" if !serving(core) => out.push_str(NOT_SERVING),
        "srvr" => {
            let _ = writeln!(out, "Zookeeper version: {VERSION}");
            srvr_body(core, &mut out);
        }
        "stat" => {
            let _ = writeln!(out, "Zookeeper version: {VERSION}");
            let _ = writeln!(out, "Clients:");
            for c in core.server.connections() {
                let _ = writeln!(
                    out,
                    " {}(queued={},recved={},sent={})",
                    peer(&c),
                    core.requests_in_flight(c.conn),
                    c.received,
                    c.sent
                );
            }
            let _ = writeln!(out);
            srvr_body(core, &mut out);
        }
        "cons" => {
            for c in core.server.connections() {
                let l = core.latency.get(&c.conn).copied().unwrap_or_default();
                let avg = l.sum.checked_div(l.count).unwrap_or(0);
                let _ = writeln!(
                    out,
                    " {}(queued={},recved={},sent={},sid=0x{:x},lop={},est={},to={},lcxid=0x{:x},lzxid=0x{:x},lresp={},llat={},minlat={},avglat={},maxlat={})",
                    peer(&c), core.requests_in_flight(c.conn), c.received, c.sent, c.session, c.last_op, c.established_ms, c.timeout_ms,
                    c.last_cxid, c.last_zxid, c.last_response_ms, l.last, l.min, avg, l.max
                );
            }
            let _ = writeln!(out);
        }
        "wchc" => {
            let s = &core.server;
            for (conn, paths) in s.watches().by_connection() {
                let _ = writeln!(out, "0x{:x}", s.session_of(conn).unwrap_or(0));
                for p in paths {
                    let _ = writeln!(out, "\t{p}");
                }
            }
            let _ = writeln!(out);
        }
        "wchp" => {
            let s = &core.server;
            for (p, conns) in s.watches().by_path() {
                let _ = writeln!(out, "{p}");
                for c in conns {
                    let _ = writeln!(out, "\t0x{:x}", s.session_of(c).unwrap_or(0));
                }
            }
            let _ = writeln!(out);
        }
        "dump" => {
            let s = &core.server;
            let sessions = s.sessions();
            let _ = writeln!(out, "SessionTracker dump:");
            let _ = writeln!(out, "Global Sessions({}):", sessions.len());
            for (id, timeout) in &sessions {
                let _ = writeln!(out, "0x{id:x}\t{timeout}ms");
            }
            let _ = writeln!(out, "ephemeral nodes dump:");
            let with: Vec<(i64, Vec<String>)> = sessions
                .iter()
                .map(|(id, _)| (*id, s.tree().ephemerals_of(*id)))
                .filter(|(_, e)| !e.is_empty())
                .collect();
            let _ = writeln!(out, "Sessions with Ephemerals ({}):", with.len());
            for (id, paths) in with {
                let _ = writeln!(out, "0x{id:x}:");
                for p in paths {
                    let _ = writeln!(out, "\t{p}");
                }
            }
            let _ = writeln!(out, "Connections dump:");
            let conns = s.connections();
            let _ = writeln!(out, "Connections ({}):", conns.len());
            for c in conns {
                let _ = writeln!(out, "\tip: {} sessionId: 0x{:x}", peer(&c), c.session);
            }
        }
        "srst" => {
            core.metrics.reset();
            core.server.counters = Default::default();
            out.push_str("Server stats reset.\n");
        }
        "crst" => {
            core.latency.clear();
            out.push_str("Connection stats reset.\n");
        }
        "conf" => {
            let _ = writeln!(out, "clientPort={}", cfg.client_port);
            let _ = writeln!(out, "secureClientPort=-1");
            let _ = writeln!(out, "dataDir={}", cfg.data_dir.display());
            let _ = writeln!(out, "dataLogDir={}", cfg.data_log_dir.display());
            let _ = writeln!(out, "tickTime={}", cfg.tick_time_ms);
            let _ = writeln!(out, "maxClientCnxns={}", cfg.max_client_cnxns);
            let _ = writeln!(out, "minSessionTimeout={}", cfg.min_session_timeout_ms);
            let _ = writeln!(out, "maxSessionTimeout={}", cfg.max_session_timeout_ms);
            let _ = writeln!(out, "clientPortListenBacklog=-1");
            let _ = writeln!(out, "serverId={}", cfg.my_id);
            if let Some(v) = cfg.init_limit {
                let _ = writeln!(out, "initLimit={v}");
            }
            if let Some(v) = cfg.sync_limit {
                let _ = writeln!(out, "syncLimit={v}");
            }
        }
        "envi" => {
            let _ = writeln!(out, "Environment:");
            let _ = writeln!(out, "zookeeper.version={VERSION}");
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let _ = writeln!(out, "host.name={}", host.trim());
            let _ = writeln!(out, "os.name=Linux");
            let _ = writeln!(
                out,
                "user.dir={}",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            );
        }
        "mntr" => {
            let (min, avg, max) = latency_ms(core);
            let s = &core.server;
            let (fds, fd_max) = fd_counts();
            let mut rows: Vec<(&str, String)> = vec![
                ("zk_version", VERSION.to_owned()),
                ("zk_server_state", mode(core).to_owned()),
                ("zk_avg_latency", fmt_avg(avg)),
                ("zk_max_latency", max.to_string()),
                ("zk_min_latency", min.to_string()),
                (
                    "zk_packets_received",
                    s.counters.packets_received.to_string(),
                ),
                ("zk_packets_sent", s.counters.packets_sent.to_string()),
                ("zk_num_alive_connections", s.connection_count().to_string()),
                ("zk_outstanding_requests", core.outstanding().to_string()),
                ("zk_znode_count", s.tree().node_count_reported().to_string()),
                ("zk_watch_count", s.watch_count().to_string()),
                (
                    "zk_ephemerals_count",
                    s.tree().ephemeral_count().to_string(),
                ),
                (
                    "zk_approximate_data_size",
                    s.tree().approximate_data_size().to_string(),
                ),
                ("zk_open_file_descriptor_count", fds.to_string()),
                ("zk_max_file_descriptor_count", fd_max.to_string()),
                ("zk_global_sessions", s.session_count().to_string()),
                ("zk_uptime", core.started.elapsed().as_millis().to_string()),
            ];
            rows.extend(ensemble_rows(core));
            for (k, v) in rows {
                let _ = writeln!(out, "{k}\t{v}");
            }
        }
        "wchs" => {
            let w = core.server.watches();
            let conns = w.by_connection().len();
            let _ = writeln!(out, "{conns} connections watching {} paths", w.data_paths());
            let _ = writeln!(out, "Total watches:{}", w.data_count());
        }
        "dirs" => {
            let _ = writeln!(out, "datadir_size: {}", dir_size(&cfg.data_dir));
            let _ = writeln!(out, "logdir_size: {}", dir_size(&cfg.data_log_dir));
        }
        other => {
            // Known to the protocol but not (yet) answered by zkd.
            let _ = writeln!(out, "{other} is not supported by zkd.");
        }
    }
    out
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
