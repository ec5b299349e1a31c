//! Command line: `zkd serve <zoo.cfg>`, `zkd status [host:port]`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::runtime::Core;
use crate::storage::Store;

const HELP: &str = "\
zkd - a ZooKeeper-compatible coordination server

Usage:
  zkd serve <zoo.cfg>        run a server in the foreground with this configuration
  zkd status [host:port]     print mode, zxid, connections and node count of a
                             running server (default 127.0.0.1:2181)
  zkd import <src> <zoo.cfg> load Apache ZooKeeper data (its dataDir, version-2
                             directory or a snapshot file) into the empty zkd
                             store of zoo.cfg's dataDir, sessions included
  zkd export <zoo.cfg> <out> write zkd's tree and sessions as a ZooKeeper snapshot
                             file (into <out>, or <out>/snapshot.<zxid>)
  zkd --help                 this text
  zkd --version              print the version

zkd reads Apache ZooKeeper's zoo.cfg (and myid in dataDir). Logs go to stderr;
set the level with RUST_LOG (error, warn, info, debug, trace; default info).
See zkd(8) and zoo.cfg(5).
";

pub fn main(args: Vec<String>) -> i32 {
    if args.first().map(String::as_str) != Some("serve") {
        // The one-shot commands behave like other Unix tools in a pipeline
        // (`zkd status | head -1`): a closed pipe ends them quietly. The
        // server keeps Rust's default (SIGPIPE ignored; errors on sockets).
        // SAFETY: restoring a signal's default disposition at start-up,
        // before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match args.first().map(String::as_str) {
        None | Some("-h") | Some("--help") | Some("help") => {
            print!("{HELP}");
            if args.is_empty() {
                2
            } else {
                0
            }
        }
        Some("-V") | Some("--version") => {
            println!(
                "zkd {} (ZooKeeper protocol {})",
                env!("CARGO_PKG_VERSION"),
                crate::fourlw::VERSION
            );
            0
        }
        Some("serve") => match args.get(1..).unwrap_or(&[]) {
            [cfg] if cfg != "--help" && cfg != "-h" => serve(PathBuf::from(cfg)),
            [h] if h == "--help" || h == "-h" => {
                print!("{HELP}");
                0
            }
            _ => {
                eprintln!("zkd serve: expected exactly one argument, the path of zoo.cfg");
                2
            }
        },
        Some("status") => match args.get(1..).unwrap_or(&[]) {
            [] => status("127.0.0.1:2181"),
            [h] if h == "--help" || h == "-h" => {
                print!("{HELP}");
                0
            }
            [addr] => status(addr),
            _ => {
                eprintln!("zkd status: expected at most one argument, host:port");
                2
            }
        },
        Some("import") => match args.get(1..).unwrap_or(&[]) {
            [src, cfg] => import(Path::new(src), Path::new(cfg)),
            _ => {
                eprintln!(
                    "zkd import: expected two arguments: the ZooKeeper data and zkd's zoo.cfg"
                );
                2
            }
        },
        Some("export") => match args.get(1..).unwrap_or(&[]) {
            [cfg, out] => export(Path::new(cfg), Path::new(out)),
            _ => {
                eprintln!("zkd export: expected two arguments: zkd's zoo.cfg and the output file or directory");
                2
            }
        },
        Some(other) => {
            eprintln!("zkd: unknown command '{other}' (try zkd --help)");
            2
        }
    }
}

fn load_cfg(cfg_path: &Path) -> Result<Config, i32> {
    Config::load(cfg_path).map_err(|e| {
        eprintln!("zkd: {}: {e}", cfg_path.display());
        78
    })
}

fn import(src: &Path, cfg_path: &Path) -> i32 {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let cfg = match load_cfg(cfg_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::migrate::import(src, &cfg) {
        Ok(s) => {
            println!(
                "imported {} znodes and {} sessions up to zxid 0x{:x} into {} (snapshot {} at 0x{:x}, {} log files, {} txns replayed, {} skipped)",
                s.nodes,
                s.sessions,
                s.last_zxid,
                cfg.data_dir.join("zkd.db").display(),
                s.snapshot.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
                s.snapshot_zxid,
                s.logs,
                s.txns_applied,
                s.txns_skipped
            );
            if let Some(t) = s.torn_tail {
                println!(
                    "note: the log ended in a torn entry ({t}); nothing after it was imported"
                );
            }
            0
        }
        Err(e) => {
            eprintln!("zkd import: {e}");
            1
        }
    }
}

fn export(cfg_path: &Path, out: &Path) -> i32 {
    let cfg = match load_cfg(cfg_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::migrate::export(&cfg, out) {
        Ok((path, n)) => {
            println!("exported {n} znodes to {}", path.display());
            0
        }
        Err(e) => {
            eprintln!("zkd export: {e}");
            1
        }
    }
}

fn serve(cfg_path: PathBuf) -> i32 {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    crate::refuse_huge_pages();
    let cfg = match Config::load(&cfg_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zkd: {}: {e}", cfg_path.display());
            return 78;
        }
    };
    for k in &cfg.unknown_keys {
        log::warn!("{}: unknown key '{k}' ignored", cfg_path.display());
    }
    for k in &cfg.ignored_keys {
        log::info!(
            "{}: key '{k}' is accepted but has no effect in zkd",
            cfg_path.display()
        );
    }
    let cfg = Arc::new(cfg);
    // Before any thread is started: they all inherit it.
    let slice = sched_slice(cfg.sched_slice_us);
    crate::purge::start();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cfg.worker_threads_for(cores);
    log::info!(
        "event=start cores={cores} worker_threads={workers} sched_slice_us={slice} event_loop_look_us={}",
        cfg.event_loop_look().as_micros()
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zkd: cannot start runtime: {e}");
            return 71;
        }
    };
    rt.block_on(async move {
        // Everything that can fail on configuration or ports is checked
        // before the store is opened: an early exit never races the storage
        // thread.
        let addr = std::net::SocketAddr::new(cfg.client_port_address, cfg.client_port);
        let listener = match listen(addr) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot listen on {addr}: {e}");
                return 75;
            }
        };
        let metrics = match cfg.metrics_addr {
            None => None,
            Some(maddr) => match tokio::net::TcpListener::bind(maddr).await {
                Ok(l) => Some((maddr, l)),
                Err(e) => {
                    log::error!("cannot listen for metrics on {maddr}: {e}");
                    return 75;
                }
            },
        };
        let secure = match (cfg.secure_client_port, cfg.tls.as_ref()) {
            (Some(port), Some(t)) => {
                let acceptor = match crate::tls::acceptor(t) {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("zkd: secure client port: {e}");
                        return 78;
                    }
                };
                let saddr = std::net::SocketAddr::new(cfg.client_port_address, port);
                match listen(saddr) {
                    Ok(l) => Some((saddr, l, acceptor)),
                    Err(e) => {
                        log::error!("cannot listen on {saddr}: {e}");
                        return 75;
                    }
                }
            }
            _ => None,
        };
        let db_dir = cfg.data_dir.join("zkd.db");
        let store = match Store::open(&db_dir, &cfg.data_log_dir) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot open store in {}: {e}", cfg.data_dir.display());
                return 74;
            }
        };
        crate::trash::start(db_dir.clone());
        crate::pagecache::keep_out(db_dir);
        let (durable_tx, durable_rx) = tokio::sync::mpsc::unbounded_channel();
        let core = match Core::new(cfg.clone(), store, durable_tx) {
            Ok(c) => c,
            Err(e) => {
                log::error!("cannot start from {}: {e}", cfg.data_dir.display());
                return 74;
            }
        };
        log::info!(
            "serving clients on {addr}, data in {}",
            cfg.data_dir.display()
        );
        // Requests waiting for the core are bounded: past the limit, sends
        // from connection readers wait, so sockets stop being read.
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.global_outstanding_limit);
        if let Some((maddr, l)) = metrics {
            log::info!("Prometheus metrics on http://{maddr}/metrics");
            tokio::spawn(crate::metrics::serve(l, tx.clone()));
        }
        if let Some((saddr, l, acceptor)) = secure {
            log::info!("serving TLS clients on {saddr}");
            tokio::spawn(crate::net::serve(
                l,
                cfg.clone(),
                tx.clone(),
                Some(acceptor),
            ));
        }
        tokio::spawn(crate::net::serve(listener, cfg.clone(), tx, None));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let mut core_task = tokio::spawn(core.run(rx, durable_rx, stop_rx));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => log::info!("interrupted, stopping"),
            _ = terminate() => log::info!("terminated, stopping"),
            _ = &mut core_task => {
                log::error!("core stopped");
                return 70;
            }
        }
        let _ = stop_tx.send(());
        if let Ok(storage_thread) = core_task.await {
            // Let storage finish and close RocksDB before the process exits.
            let _ = tokio::task::spawn_blocking(move || storage_thread.join()).await;
            log::debug!("storage thread joined");
        }
        0
    })
}

/// The client port. The accept backlog is deep (4096, the kernel caps it at
/// somaxconn) so that a crowd of clients reconnecting at once after a restart
/// is queued, not dropped into one-second SYN retries.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Sends a four-letter word and returns the answer.
pub fn four_letter(addr: &str, word: &str) -> std::io::Result<String> {
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(word.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn status(addr: &str) -> i32 {
    let addr = if addr.contains(':') {
        addr.to_owned()
    } else {
        format!("{addr}:2181")
    };
    match four_letter(&addr, "srvr") {
        Ok(text) if text.contains("not currently serving") => {
            println!("Mode: looking (not serving: electing or syncing with a leader)");
            0
        }
        Ok(text) if text.contains("Mode:") => {
            for key in ["Mode", "Zxid", "Connections", "Node count"] {
                if let Some(line) = text.lines().find(|l| l.starts_with(&format!("{key}:"))) {
                    println!("{line}");
                }
            }
            0
        }
        Ok(text) => {
            eprintln!(
                "zkd status: {addr} answered without a mode: {}",
                text.trim()
            );
            1
        }
        Err(e) => {
            eprintln!("Error contacting service at {addr}. It is probably not running. ({e})");
            1
        }
    }
}

/// Asks for `schedSliceMicros` (0: nothing asked) and says what became of
/// it: the slice in µs for the start line, or `default`.
fn sched_slice(us: u64) -> String {
    use crate::sched::{policy_name, set_slice, Slice};
    if us == 0 {
        return "default".into();
    }
    let (level, why) = match set_slice(us) {
        Ok(Slice::Set) => return us.to_string(),
        Ok(Slice::OtherPolicy(p)) => (
            log::Level::Info,
            format!("zkd runs under {}, left as started", policy_name(p)),
        ),
        Ok(Slice::NotKept { asked_ns, got_ns }) => (
            log::Level::Info,
            format!("asked for {asked_ns} ns, the kernel reports {got_ns} (per-thread slices need Linux 6.12)"),
        ),
        Err(e) => (log::Level::Warn, e.to_string()),
    };
    log::log!(level, "schedSliceMicros not applied: {why}");
    "default".into()
}
