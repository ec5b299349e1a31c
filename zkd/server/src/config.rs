//! `zoo.cfg`, read the way Apache ZooKeeper reads it (Java properties:
//! `key=value`, `key: value` or `key value`; `#`/`!` comments), so an operator
//! can reuse theirs. Unknown keys are warned about by name; a known key with
//! an invalid value refuses to start with a message naming key and value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub id: u64,
    pub host: String,
    pub quorum_port: u16,
    pub election_port: u16,
    pub observer: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tick_time_ms: i32,
    pub data_dir: PathBuf,
    pub data_log_dir: PathBuf,
    pub client_port: u16,
    pub client_port_address: IpAddr,
    pub max_client_cnxns: u32,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub init_limit: Option<u32>,
    pub sync_limit: Option<u32>,
    pub servers: Vec<ServerSpec>,
    /// Four-letter words allowed on the client port; `None` means all (`*`).
    pub four_letter_words: Option<Vec<String>>,
    pub frame_bytes_max: usize,
    /// TTL nodes allowed (`zookeeper.extendedTypesEnabled`, default true).
    pub extended_types: bool,
    /// `znode.container.checkIntervalMs` (default 60000).
    pub container_check_interval_ms: i64,
    /// `znode.container.maxPerMinute` (default 10000).
    pub container_max_per_minute: u32,
    /// `zookeeper.DigestAuthenticationProvider.superDigest` (default unset).
    pub super_digest: Option<String>,
    /// `zookeeper.enforceQuota` (default true; false in ZooKeeper).
    pub enforce_quota: bool,
    /// `connectionOutputBytesMax` (default 64 MiB): bytes queued for one
    /// client before it is throttled (at half) and then disconnected.
    pub connection_output_bytes_max: usize,
    /// `connectionOutstandingRequestsMax` (default 1000): requests one
    /// connection may have read and unanswered before zkd stops reading it.
    pub connection_outstanding_requests_max: usize,
    /// Ensemble log compaction: `snapCount` (default 100000) delivered
    /// txns, or `snapSizeLimitInKb` (default 65536, i.e. 64 MiB) of them,
    /// held before the log is compacted down to the last
    /// `commitLogCount` (default 500).
    pub snap_count: usize,
    pub snap_size_limit_bytes: usize,
    pub commit_log_count: usize,
    /// `dataDirFreeBytesMin` (default 64 MiB): below this much free space
    /// on the data directory's filesystem, client writes are refused.
    pub data_dir_free_bytes_min: u64,
    /// `globalOutstandingLimit` (default 1000): requests read from clients
    /// and not yet taken by the core; past it, zkd stops reading sockets.
    pub global_outstanding_limit: usize,
    /// The Prometheus endpoint's address, when `metricsProvider.className`
    /// names ZooKeeper's Prometheus provider (`metricsProvider.httpHost`,
    /// default 0.0.0.0, and `metricsProvider.httpPort`, default 7000, as in
    /// ZooKeeper). Off otherwise.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `fsync.warningthresholdms` (default 1000, as ZooKeeper): a group
    /// commit slower than this is logged as `event=slow_fsync`.
    pub fsync_warning_ms: u64,
    /// `slowRequestThresholdMs` (default 1000; 0 logs every request): a request answered
    /// later than this is logged as `event=slow_request`.
    pub slow_request_ms: u64,
    /// `syncIdleSpin`: the storage thread's CPU is kept from idling while
    /// it waits for a log sync (see `awake`). `None` (the default) lets
    /// `sync_idle_spin()` decide.
    pub sync_idle_spin: Option<bool>,
    /// `eventLoopLookMicros` (default 0, off): how long a worker polls its
    /// sockets after the core's last step before it may sleep (see
    /// `evlook`, which says why it is off unless set).
    pub event_loop_look_us: u64,
    /// `workerThreads`: threads that serve sockets and run the core.
    /// `None` (the default) lets `worker_threads()` decide.
    pub worker_threads: Option<usize>,
    /// `schedSliceMicros` (default 300; 0 leaves the kernel's): the CPU
    /// time slice zkd's threads ask the scheduler for (see `sched`).
    pub sched_slice_us: u64,
    /// `secureClientPort`: a TLS client port (with `ssl.keyStore.location`).
    pub secure_client_port: Option<u16>,
    /// TLS material and policy for the secure client port.
    pub tls: Option<TlsSettings>,
    /// From `dataDir/myid`; 0 in standalone mode without one.
    pub my_id: u64,
    /// Keys that were present but that zkd does not know.
    pub unknown_keys: Vec<String>,
    /// Keys that ZooKeeper knows and zkd accepts without acting on them.
    pub ignored_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Io(String, String),
    Invalid {
        key: String,
        value: String,
        why: String,
    },
    Missing(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io(path, e) => write!(f, "cannot read {path}: {e}"),
            ConfigError::Invalid { key, value, why } => {
                write!(f, "invalid value for {key}: '{value}' ({why})")
            }
            ConfigError::Missing(key) => write!(f, "{key} is not set"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Whether the secure port asks clients for certificates (`ssl.clientAuth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Want,
    Need,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the private key and the certificate chain
    /// (`ssl.keyStore.location`, `ssl.keyStore.type=PEM`).
    pub key_store: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to
    /// (`ssl.trustStore.location`); required unless `ssl.clientAuth=none`.
    pub trust_store: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// `schedSliceMicros` when unset; why this value is in `sched`.
pub const DEFAULT_SCHED_SLICE_US: u64 = 300;

/// The class name ZooKeeper's zoo.cfg uses to turn on its Prometheus
/// endpoint; zkd answers the same configuration with its own.
pub const PROMETHEUS_PROVIDER: &str =
    "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider";

/// Keys of Apache ZooKeeper's zoo.cfg that zkd accepts and does not act on,
/// so a reused file starts without noise beyond one line each.
const IGNORED_KEYS: &[&str] = &[
    "autopurge.snapRetainCount",
    "autopurge.purgeInterval",
    "admin.enableServer",
    "admin.serverPort",
    "admin.serverAddress",
    "standaloneEnabled",
    "reconfigEnabled",
    "preAllocSize",
    "txnLogSizeLimitInKb",
    "syncEnabled",
    "electionAlg",
    "peerType",
    "forceSync",
    "leaderServes",
    "cnxTimeout",
    "quorumListenOnAllIPs",
    "metricsProvider.exportJvmInfo",
    "localSessionsEnabled",
    "localSessionsUpgradingEnabled",
    "maxResponseCacheSize",
    "maxGetChildrenResponseCacheSize",
    "clientPortListenBacklog",
    "initialConfig",
    "serverCnxnFactory",
];

/// Parses Java-properties text into key/value pairs, last one winning.
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut line = line.trim_start().to_owned();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        // A trailing backslash continues the logical line.
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some(next) => line.push_str(next.trim_start()),
                None => break,
            }
        }
        let split = line.find(['=', ':', ' ', '\t']);
        let (k, v) = match split {
            Some(i) => {
                let k = &line[..i];
                let rest = line[i..].trim_start_matches([' ', '\t']);
                let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
                (k.to_owned(), rest.trim().to_owned())
            }
            None => (line.trim().to_owned(), String::new()),
        };
        out.push((k, v));
    }
    out
}

fn invalid(key: &str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        why: why.into(),
    }
}

impl Config {
    /// `syncIdleSpin` if set; otherwise on for a standalone server and
    /// off for an ensemble member. On a 3-member loopback ensemble (2
    /// cores, one disk, 2 alternations of 3 s runs) the helpers cost lone
    /// writes 5-11% (setData 3,224/3,042 against 3,416/3,347 ops/s) and
    /// 10 KiB creates more; members on separate machines were not measured.
    pub fn sync_idle_spin(&self) -> bool {
        self.sync_idle_spin.unwrap_or(self.servers.is_empty())
    }

    /// The event loop's look (`evlook`): `eventLoopLookMicros`.
    pub fn event_loop_look(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.event_loop_look_us)
    }

    /// How many threads serve sockets and run the core, on a machine with
    /// `cores` cores: `workerThreads` if set; otherwise one per core,
    /// shared out among the ensemble members this config places on this
    /// machine's loopback addresses (a test or development ensemble).
    ///
    /// Why: three members with a thread per core each, on 2 cores, woke
    /// each other's idle threads for every message (a thread handing work
    /// to its sibling), and each extra wake-up had to wait for a core. With
    /// one thread each, measured with zkbench on a 3-member loopback
    /// ensemble (2 rounds, alternated): delete 1x1 +8%, create 16x32
    /// 10 KiB 8.1k -> 14.8k ops/s, getData 16x32 and setData 16x32 within
    /// noise. A standalone server keeps both: getData 16x32 fell 30% with
    /// one. Measured again with two per member (one full `bench.sh
    /// --ensemble` table each way, same build): 1x1 reads 1.4-2x as fast,
    /// but 12 of the 16 create/setData/delete/multi rows 2-30% slower and
    /// the 1x1 100 B read/write mix 36% slower (10 KiB: 10% faster), so
    /// the share stays. Again on a second 2-core machine (`bench.sh
    /// --ensemble --repeat 3`, six rows each way): 16x32 100 B setData,
    /// create and delete 28%, 19% and 22% slower with two, 1x1 10 KiB
    /// exists 2.1x as fast. A lone read costs one thread two wake-ups on
    /// the other CPU (socket in, reply out), ~25 µs each where the idle CPU
    /// halts at once (that machine's haltpoll polled 0 ns): p50 61-63 µs
    /// against 8 with two threads or with the client pinned to zkd's CPU.
    pub fn worker_threads_for(&self, cores: usize) -> usize {
        if let Some(n) = self.worker_threads {
            return n;
        }
        let cores = cores.max(1);
        let loopback = |host: &str| {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        let me_local = self
            .servers
            .iter()
            .any(|s| s.id == self.my_id && loopback(&s.host));
        let local = self.servers.iter().filter(|s| loopback(&s.host)).count();
        if me_local && local > 1 {
            (cores / local).max(1)
        } else {
            cores
        }
    }
}

fn int<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.parse::<T>()
        .map_err(|_| invalid(key, v, "not a valid number"))
}

fn parse_server(key: &str, id: &str, v: &str) -> Result<ServerSpec, ConfigError> {
    let id: u64 = id
        .parse()
        .map_err(|_| invalid(key, v, "server id must be a number"))?;
    // host:quorumPort:electionPort[:participant|observer][;[clientAddr:]clientPort]
    let spec = v.split(';').next().unwrap_or("");
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.len() < 3 || parts.len() > 4 {
        return Err(invalid(
            key,
            v,
            "expected host:quorumPort:electionPort[:observer]",
        ));
    }
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| invalid(key, v, format!("'{s}' is not a port")))
    };
    let observer = match parts.get(3) {
        None | Some(&"participant") => false,
        Some(&"observer") => true,
        Some(other) => return Err(invalid(key, v, format!("unknown role '{other}'"))),
    };
    Ok(ServerSpec {
        id,
        host: parts[0].to_owned(),
        quorum_port: port(parts[1])?,
        election_port: port(parts[2])?,
        observer,
    })
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(path.display().to_string(), e.to_string()))?;
        let mut cfg = Config::parse(&text)?;
        cfg.my_id = read_myid(&cfg.data_dir, !cfg.servers.is_empty())?;
        Ok(cfg)
    }

    /// Parses zoo.cfg text (without reading `myid`).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut kv: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in parse_properties(text) {
            kv.insert(k, v);
        }
        let get = |k: &str| kv.get(k).map(|s| s.as_str());
        let tick_time_ms: i32 = match get("tickTime") {
            Some(v) => int("tickTime", v)?,
            None => 3000,
        };
        if tick_time_ms <= 0 {
            return Err(invalid(
                "tickTime",
                &tick_time_ms.to_string(),
                "must be positive",
            ));
        }
        let data_dir = PathBuf::from(get("dataDir").ok_or(ConfigError::Missing("dataDir"))?);
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("dataDir", "", "must not be empty"));
        }
        let data_log_dir = get("dataLogDir")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.clone());
        let client_port: u16 = match get("clientPort") {
            Some(v) => int("clientPort", v)?,
            None => return Err(ConfigError::Missing("clientPort")),
        };
        let client_port_address = match get("clientPortAddress") {
            Some(v) => v
                .parse()
                .map_err(|_| invalid("clientPortAddress", v, "not an IP address"))?,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        let max_client_cnxns = match get("maxClientCnxns") {
            Some(v) => int("maxClientCnxns", v)?,
            None => 60,
        };
        let timeout = |k: &str, default: i32| -> Result<i32, ConfigError> {
            match get(k) {
                Some(v) => {
                    let n: i32 = int(k, v)?;
                    if n == -1 {
                        Ok(default)
                    } else if n <= 0 {
                        Err(invalid(k, v, "must be positive (or -1 for the default)"))
                    } else {
                        Ok(n)
                    }
                }
                None => Ok(default),
            }
        };
        let min_session_timeout_ms = timeout("minSessionTimeout", 2 * tick_time_ms)?;
        let max_session_timeout_ms = timeout("maxSessionTimeout", 20 * tick_time_ms)?;
        if min_session_timeout_ms > max_session_timeout_ms {
            return Err(invalid(
                "minSessionTimeout",
                &min_session_timeout_ms.to_string(),
                format!("must not be larger than maxSessionTimeout ({max_session_timeout_ms})"),
            ));
        }
        let init_limit = get("initLimit").map(|v| int("initLimit", v)).transpose()?;
        let sync_limit = get("syncLimit").map(|v| int("syncLimit", v)).transpose()?;
        let four_letter_words = match get("4lw.commands.whitelist") {
            None => Some(vec!["srvr".to_owned()]),
            Some(v) if v.trim() == "*" => None,
            Some(v) => {
                let mut words = Vec::new();
                for w in v.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    if !zk_proto::frame::FOUR_LETTER_WORDS.contains(&w) {
                        return Err(invalid(
                            "4lw.commands.whitelist",
                            v,
                            format!("unknown command '{w}'"),
                        ));
                    }
                    words.push(w.to_owned());
                }
                Some(words)
            }
        };
        let frame_bytes_max = match get("jute.maxbuffer") {
            Some(v) => {
                let n: i64 = int("jute.maxbuffer", v)?;
                if n < 1024 || n > i32::MAX as i64 {
                    return Err(invalid(
                        "jute.maxbuffer",
                        v,
                        "must be between 1024 and 2147483647",
                    ));
                }
                n as usize
            }
            None => zk_proto::frame::FRAME_BYTES_MAX_DEFAULT,
        };
        let flag = |key: &str| match get(key) {
            None => Ok(true),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(invalid(key, v, "must be true or false")),
        };
        let extended_types = flag("zookeeper.extendedTypesEnabled")?;
        let enforce_quota = flag("zookeeper.enforceQuota")?;
        let sync_idle_spin = get("syncIdleSpin")
            .map(|_| flag("syncIdleSpin"))
            .transpose()?;
        let global_outstanding_limit: usize = match get("globalOutstandingLimit") {
            Some(v) => {
                let n: usize = int("globalOutstandingLimit", v)?;
                if n == 0 {
                    return Err(invalid("globalOutstandingLimit", v, "must be at least 1"));
                }
                n
            }
            None => 1000,
        };
        let data_dir_free_bytes_min: u64 = match get("dataDirFreeBytesMin") {
            Some(v) => int("dataDirFreeBytesMin", v)?,
            None => 64 << 20,
        };
        let connection_output_bytes_max = match get("connectionOutputBytesMax") {
            Some(v) => {
                let n: usize = int("connectionOutputBytesMax", v)?;
                if n < 2 * frame_bytes_max {
                    return Err(invalid(
                        "connectionOutputBytesMax",
                        v,
                        format!(
                            "must be at least twice jute.maxbuffer ({})",
                            2 * frame_bytes_max
                        ),
                    ));
                }
                n
            }
            None => (64 << 20).max(2 * frame_bytes_max),
        };
        let connection_outstanding_requests_max: usize =
            match get("connectionOutstandingRequestsMax") {
                Some(v) => {
                    let n: usize = int("connectionOutstandingRequestsMax", v)?;
                    if n == 0 {
                        return Err(invalid(
                            "connectionOutstandingRequestsMax",
                            v,
                            "must be at least 1",
                        ));
                    }
                    n
                }
                None => 1000,
            };
        let at_least_1 = |key: &str, default: usize| -> Result<usize, ConfigError> {
            match get(key) {
                Some(v) => {
                    let n: usize = int(key, v)?;
                    if n == 0 {
                        return Err(invalid(key, v, "must be at least 1"));
                    }
                    Ok(n)
                }
                None => Ok(default),
            }
        };
        let snap_count = at_least_1("snapCount", 100_000)?;
        let snap_size_limit_bytes = at_least_1("snapSizeLimitInKb", 64 << 10)?.saturating_mul(1024);
        let commit_log_count = at_least_1("commitLogCount", 500)?;
        let container_check_interval_ms: i64 = match get("znode.container.checkIntervalMs") {
            Some(v) => {
                let n: i64 = int("znode.container.checkIntervalMs", v)?;
                if n <= 0 {
                    return Err(invalid(
                        "znode.container.checkIntervalMs",
                        v,
                        "must be positive",
                    ));
                }
                n
            }
            None => 60_000,
        };
        let container_max_per_minute = match get("znode.container.maxPerMinute") {
            Some(v) => int("znode.container.maxPerMinute", v)?,
            None => 10_000,
        };
        let super_digest = match get("zookeeper.DigestAuthenticationProvider.superDigest") {
            None => None,
            Some(v) if v.split(':').count() == 2 && !v.starts_with(':') => Some(v.to_owned()),
            Some(v) => {
                return Err(invalid(
                    "zookeeper.DigestAuthenticationProvider.superDigest",
                    "(hidden)",
                    format!(
                        "expected user:base64-sha1 digest, got {} characters",
                        v.len()
                    ),
                ))
            }
        };
        let metrics_addr = match get("metricsProvider.className") {
            None => None,
            Some(PROMETHEUS_PROVIDER) => {
                let host = get("metricsProvider.httpHost").unwrap_or("0.0.0.0");
                let ip: IpAddr = host
                    .parse()
                    .map_err(|_| invalid("metricsProvider.httpHost", host, "not an IP address"))?;
                let port: u16 = match get("metricsProvider.httpPort") {
                    Some(v) => int("metricsProvider.httpPort", v)?,
                    None => 7000,
                };
                Some(std::net::SocketAddr::new(ip, port))
            }
            Some(other) => {
                return Err(invalid(
                    "metricsProvider.className",
                    other,
                    format!("zkd provides only {PROMETHEUS_PROVIDER}"),
                ))
            }
        };
        let fsync_warning_ms: u64 = match get("fsync.warningthresholdms") {
            Some(v) => int("fsync.warningthresholdms", v)?,
            None => 1000,
        };
        let slow_request_ms: u64 = match get("slowRequestThresholdMs") {
            Some(v) => int("slowRequestThresholdMs", v)?,
            None => 1000,
        };
        let worker_threads: Option<usize> = match get("workerThreads") {
            None => None,
            Some(v) => {
                let n: usize = int("workerThreads", v)?;
                if !(1..=1024).contains(&n) {
                    return Err(invalid("workerThreads", v, "expected 1 to 1024"));
                }
                Some(n)
            }
        };
        let event_loop_look_us: u64 = match get("eventLoopLookMicros") {
            None => 0,
            Some(v) => {
                let n: u64 = int("eventLoopLookMicros", v)?;
                if n > 100_000 {
                    return Err(invalid("eventLoopLookMicros", v, "expected 0 to 100000"));
                }
                n
            }
        };
        let sched_slice_us: u64 = match get("schedSliceMicros") {
            None => DEFAULT_SCHED_SLICE_US,
            Some(v) => {
                let n: u64 = int("schedSliceMicros", v)?;
                // The kernel's own bounds for a thread's slice.
                if n != 0 && !(100..=100_000).contains(&n) {
                    return Err(invalid(
                        "schedSliceMicros",
                        v,
                        "expected 0 or 100 to 100000",
                    ));
                }
                n
            }
        };
        let secure_client_port: Option<u16> = match get("secureClientPort") {
            Some(v) => Some(int("secureClientPort", v)?),
            None => None,
        };
        for key in ["ssl.keyStore.type", "ssl.trustStore.type"] {
            if let Some(v) = get(key) {
                if !v.eq_ignore_ascii_case("PEM") {
                    return Err(invalid(
                        key,
                        v,
                        "zkd reads PEM files only (convert JKS/PKCS12 with keytool/openssl)",
                    ));
                }
            }
        }
        let client_auth = match get("ssl.clientAuth").map(|v| v.to_ascii_lowercase()) {
            None => ClientAuth::Need,
            Some(v) if v == "need" => ClientAuth::Need,
            Some(v) if v == "want" => ClientAuth::Want,
            Some(v) if v == "none" => ClientAuth::None,
            Some(v) => return Err(invalid("ssl.clientAuth", &v, "expected none, want or need")),
        };
        let tls = match (secure_client_port, get("ssl.keyStore.location")) {
            (None, _) => None,
            (Some(_), None) => return Err(ConfigError::Missing("ssl.keyStore.location")),
            (Some(_), Some(k)) => {
                let trust_store = get("ssl.trustStore.location").map(PathBuf::from);
                if client_auth != ClientAuth::None && trust_store.is_none() {
                    return Err(invalid(
                        "ssl.clientAuth",
                        if client_auth == ClientAuth::Need { "need" } else { "want" },
                        "client certificates need ssl.trustStore.location (or set ssl.clientAuth=none)",
                    ));
                }
                Some(TlsSettings {
                    key_store: PathBuf::from(k),
                    trust_store,
                    client_auth,
                })
            }
        };
        let mut servers = Vec::new();
        let mut unknown_keys = Vec::new();
        let mut ignored_keys = Vec::new();
        const KNOWN: &[&str] = &[
            "tickTime",
            "dataDir",
            "dataLogDir",
            "clientPort",
            "clientPortAddress",
            "maxClientCnxns",
            "minSessionTimeout",
            "maxSessionTimeout",
            "initLimit",
            "syncLimit",
            "4lw.commands.whitelist",
            "jute.maxbuffer",
            "zookeeper.extendedTypesEnabled",
            "znode.container.checkIntervalMs",
            "znode.container.maxPerMinute",
            "zookeeper.DigestAuthenticationProvider.superDigest",
            "zookeeper.enforceQuota",
            "connectionOutputBytesMax",
            "connectionOutstandingRequestsMax",
            "snapCount",
            "snapSizeLimitInKb",
            "commitLogCount",
            "dataDirFreeBytesMin",
            "globalOutstandingLimit",
            "metricsProvider.className",
            "metricsProvider.httpHost",
            "metricsProvider.httpPort",
            "fsync.warningthresholdms",
            "slowRequestThresholdMs",
            "workerThreads",
            "schedSliceMicros",
            "eventLoopLookMicros",
            "syncIdleSpin",
            "secureClientPort",
            "ssl.keyStore.location",
            "ssl.keyStore.type",
            "ssl.trustStore.location",
            "ssl.trustStore.type",
            "ssl.clientAuth",
        ];
        for (k, v) in &kv {
            if let Some(id) = k.strip_prefix("server.") {
                servers.push(parse_server(k, id, v)?);
            } else if KNOWN.contains(&k.as_str()) {
            } else if IGNORED_KEYS.contains(&k.as_str()) {
                ignored_keys.push(k.clone());
            } else {
                unknown_keys.push(k.clone());
            }
        }
        servers.sort_by_key(|s| s.id);
        Ok(Config {
            tick_time_ms,
            data_dir,
            data_log_dir,
            client_port,
            client_port_address,
            max_client_cnxns,
            min_session_timeout_ms,
            max_session_timeout_ms,
            init_limit,
            sync_limit,
            metrics_addr,
            fsync_warning_ms,
            slow_request_ms,
            worker_threads,
            sched_slice_us,
            event_loop_look_us,
            sync_idle_spin,
            secure_client_port,
            tls,
            servers,
            four_letter_words,
            frame_bytes_max,
            extended_types,
            container_check_interval_ms,
            container_max_per_minute,
            super_digest,
            enforce_quota,
            connection_output_bytes_max,
            connection_outstanding_requests_max,
            snap_count,
            snap_size_limit_bytes,
            commit_log_count,
            data_dir_free_bytes_min,
            global_outstanding_limit,
            my_id: 0,
            unknown_keys,
            ignored_keys,
        })
    }

    pub fn four_letter_word_allowed(&self, w: &str) -> bool {
        self.four_letter_words
            .as_ref()
            .is_none_or(|l| l.iter().any(|x| x == w))
    }
}

/// `dataDir/myid`: required when `server.N` lines are present.
fn read_myid(data_dir: &Path, required: bool) -> Result<u64, ConfigError> {
    let p = data_dir.join("myid");
    match std::fs::read_to_string(&p) {
        Ok(s) => match s.trim().parse::<u64>() {
            // Session ids carry the server id in their top byte, and 0xFF
            // there marks a TTL node's owner: ids stop at 254.
            Ok(n) if (1..=254).contains(&n) => Ok(n),
            _ => Err(invalid(
                "myid",
                s.trim(),
                format!("{} must hold a number from 1 to 254", p.display()),
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(0),
        Err(e) => Err(ConfigError::Io(p.display().to_string(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_reference_zoo_cfg() {
        let cfg = Config::parse(
            "# The number of milliseconds of each tick\ntickTime=2000\ninitLimit=10\nsyncLimit: 5\n\
             dataDir=/var/lib/zookeeper\nclientPort 2181\nautopurge.purgeInterval=1\nflavour=x\n\
             server.1=zoo1:2888:3888\nserver.2=zoo2:2888:3888:observer;2181\n",
        )
        .unwrap();
        assert_eq!(cfg.tick_time_ms, 2000);
        assert_eq!(cfg.client_port, 2181);
        assert_eq!(
            (cfg.min_session_timeout_ms, cfg.max_session_timeout_ms),
            (4000, 40000)
        );
        assert_eq!(cfg.sync_limit, Some(5));
        assert_eq!(cfg.servers.len(), 2);
        assert!(cfg.servers[1].observer);
        assert_eq!(cfg.unknown_keys, vec!["flavour".to_string()]);
        assert_eq!(
            cfg.ignored_keys,
            vec!["autopurge.purgeInterval".to_string()]
        );
        assert_eq!(cfg.frame_bytes_max, 0xfffff);
        assert!(cfg.four_letter_word_allowed("srvr"));
        assert!(!cfg.four_letter_word_allowed("mntr"));
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        let e = Config::parse("dataDir=/d\nclientPort=21x81\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value for clientPort: '21x81' (not a valid number)"
        );
        let e = Config::parse("dataDir=/d\nclientPort=1\ntickTime=-5\n").unwrap_err();
        assert!(e.to_string().contains("tickTime"));
        let e = Config::parse("clientPort=1\n").unwrap_err();
        assert_eq!(e.to_string(), "dataDir is not set");
        let e = Config::parse("dataDir=/d\nclientPort=1\nserver.1=a:b:c\n").unwrap_err();
        assert!(e.to_string().contains("server.1"), "{e}");
        let e = Config::parse("dataDir=/d\nclientPort=1\n4lw.commands.whitelist=srvr, nope\n")
            .unwrap_err();
        assert!(e.to_string().contains("nope"));
    }

    #[test]
    fn sync_idle_spin_defaults_to_standalone_only() {
        let base = "dataDir=/tmp/x\nclientPort=2181\n";
        let members = "server.1=127.0.0.1:2888:3888\nserver.2=127.0.0.1:2889:3889\nserver.3=127.0.0.1:2890:3890\n";
        let standalone = Config::parse(base).unwrap();
        assert!(standalone.sync_idle_spin());
        let member = Config::parse(&format!("{base}{members}")).unwrap();
        assert!(!member.sync_idle_spin());
        let forced = Config::parse(&format!("{base}{members}syncIdleSpin=true\n")).unwrap();
        assert!(forced.sync_idle_spin());
        let off = Config::parse(&format!("{base}syncIdleSpin=false\n")).unwrap();
        assert!(!off.sync_idle_spin());
    }

    #[test]
    fn event_loop_look_is_off_unless_set() {
        use std::time::Duration;
        let base = "dataDir=/tmp/x\nclientPort=2181\n";
        let members = "server.1=127.0.0.1:2888:3888\nserver.2=127.0.0.1:2889:3889\nserver.3=127.0.0.1:2890:3890\n";
        let standalone = Config::parse(base).unwrap();
        assert_eq!(standalone.event_loop_look(), Duration::ZERO);
        let member = Config::parse(&format!("{base}{members}")).unwrap();
        assert_eq!(member.event_loop_look(), Duration::ZERO);
        let set = Config::parse(&format!("{base}{members}eventLoopLookMicros=250\n")).unwrap();
        assert_eq!(set.event_loop_look(), Duration::from_micros(250));
        let off = Config::parse(&format!("{base}{members}eventLoopLookMicros=0\n")).unwrap();
        assert_eq!(off.event_loop_look(), Duration::ZERO);
        for bad in ["-1", "100001", "soon"] {
            let e = Config::parse(&format!("{base}eventLoopLookMicros={bad}\n")).unwrap_err();
            assert!(e.to_string().contains("eventLoopLookMicros"), "{e}");
        }
    }

    #[test]
    fn worker_threads_are_shared_by_members_on_loopback() {
        let members = |hosts: &[&str], me: u64| {
            let mut text = String::from("tickTime=2000\ndataDir=/tmp/x\nclientPort=2181\n");
            for (i, h) in hosts.iter().enumerate() {
                text.push_str(&format!("server.{}={h}:2888:3888\n", i + 1));
            }
            let mut cfg = Config::parse(&text).expect("valid");
            cfg.my_id = me;
            cfg
        };
        let three_local = members(&["127.0.0.1", "127.0.0.2", "localhost"], 1);
        assert_eq!(three_local.worker_threads_for(2), 1);
        assert_eq!(three_local.worker_threads_for(8), 2);
        let spread = members(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], 2);
        assert_eq!(spread.worker_threads_for(8), 8);
        let standalone = members(&[], 0);
        assert_eq!(standalone.worker_threads_for(2), 2);
        let mut set = three_local.clone();
        set.worker_threads = Some(3);
        assert_eq!(set.worker_threads_for(2), 3);
        assert!(Config::parse("dataDir=/tmp/x\nclientPort=2181\nworkerThreads=0\n").is_err());
    }
}
