//! zkbench: a pipelined, asynchronous ZooKeeper load generator.
//!
//! It speaks the client protocol through `zk-proto` over plain TCP, so it
//! drives zkd and Apache ZooKeeper identically. Each connection keeps up to
//! `--depth` requests in flight; latency is measured per request from send to
//! reply; the generator reports its own CPU use so a reader can tell that it
//! measured the server and not itself. One JSON line per run on stdout.
//!
//! `scripts/bench.sh` runs it against both servers and prints the ratios.
//! `--workload fsync` measures the disk instead of a server (`disk.rs`);
//! `--workload clear` deletes a run's znodes afterwards (`clear.rs`).
//! CPU time, its own and the servers' (`--cpu-of`), is read from /proc
//! (`cpu.rs`); the data written comes from `payload.rs`.

mod clear;
mod cpu;
mod disk;
mod payload;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use zk_proto::jute::{Reader, Writer};
use zk_proto::records::*;

use payload::{Fill, Payload};

const HELP: &str = "\
zkbench - pipelined ZooKeeper load generator

Usage: zkbench --server HOST:PORT --workload NAME [options]
       zkbench --workload fsync --dir DIR [--conns N] [--size B] [--seconds S]

Workloads: create set get exists children children10k delete multi10 mix
           populate (create --keys znodes in all, spread over the
             connections, then stop)
           fanout (--conns sessions each watch one znode; after --seconds
             of holding the watches one write fires them all; reports the
             time until each session got its event)
           clear (delete --prefix and everything under it, pipelined
             over --conns connections, --depth in flight on each)
           fsync (no server: --conns appenders, each with its own
             zero-filled file in --dir, write --size bytes and fdatasync,
             one at a time: the disk's floor for a lone durable write)
Options:
  --conns N       connections (sessions), default 1, at least 1
  --depth N       requests in flight per connection, default 1
  --seconds S     how long to run, default 5 (delete: until its nodes are gone)
  --size BYTES    data size, default 100
  --fill random|x what the data is: incompressible bytes, different for
                  every value (default), or one byte repeated (which a
                  server that compresses stores for next to nothing)
  --keys N        znodes per connection for get/set/exists/mix, default 100
  --prefix PATH   namespace for the run, default /zkbench
  --dir DIR       fsync: where the appenders' files go (removed after)
  --setup WHEN    both (default): create the run's znodes, then run;
                  only: create them and stop; skip: run on the znodes an
                  earlier --setup only made (same --prefix, --conns,
                  --keys, --workload), so a caller can let the servers
                  finish the setup's background work in between
  --cpu-of PGIDS  also report the CPU time the processes in these process
                  groups (comma-separated: the servers) used during the
                  timed run, per op (server_cpu_us_per_op)
";

#[derive(Clone)]
struct Opts {
    server: String,
    workload: String,
    conns: usize,
    depth: usize,
    seconds: f64,
    size: usize,
    keys: usize,
    prefix: String,
    dir: String,
    fill: Fill,
    setup: Setup,
    cpu_of: Vec<i64>,
}

/// Which part of a run this invocation does (`--setup`).
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Both,
    Only,
    Skip,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        server: String::new(),
        workload: String::new(),
        conns: 1,
        depth: 1,
        seconds: 5.0,
        size: 100,
        keys: 100,
        prefix: "/zkbench".into(),
        dir: String::new(),
        fill: Fill::Random,
        setup: Setup::Both,
        cpu_of: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--help" || a == "-h" {
            print!("{HELP}");
            std::process::exit(0);
        }
        let v = args.get(i + 1).ok_or(format!("{a} needs a value"))?.clone();
        let num = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{a}: not a number: {v}"))
        };
        match a {
            "--server" => o.server = v,
            "--workload" => o.workload = v,
            "--conns" => o.conns = num(&v)?,
            "--depth" => o.depth = num(&v)?,
            "--seconds" => o.seconds = v.parse().map_err(|_| format!("--seconds: {v}"))?,
            "--size" => o.size = num(&v)?,
            "--keys" => o.keys = num(&v)?,
            "--prefix" => o.prefix = v,
            "--dir" => o.dir = v,
            "--fill" => o.fill = v.parse()?,
            "--setup" => {
                o.setup = match v.as_str() {
                    "both" => Setup::Both,
                    "only" => Setup::Only,
                    "skip" => Setup::Skip,
                    _ => return Err(format!("--setup takes both, only or skip, not {v}")),
                }
            }
            "--cpu-of" => {
                o.cpu_of = v
                    .split(',')
                    .map(|g| {
                        g.trim()
                            .parse::<i64>()
                            .map_err(|_| format!("--cpu-of: bad process group {g:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown option {a}")),
        }
        i += 2;
    }
    if o.workload == "fsync" {
        if o.dir.is_empty() {
            return Err("--workload fsync needs --dir".into());
        }
    } else if o.server.is_empty() || o.workload.is_empty() {
        return Err("--server and --workload are required".into());
    }
    if o.conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    if o.workload == "clear" && (o.prefix == "/" || !o.prefix.starts_with('/')) {
        return Err(format!(
            "--workload clear takes a --prefix below /, not {:?}",
            o.prefix
        ));
    }
    Ok(o)
}

/// One session: requests go out on `wr`, replies come back in order on `rd`.
struct Conn {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
    xid: i32,
}

impl Conn {
    async fn open(server: &str) -> std::io::Result<Conn> {
        let s = TcpStream::connect(server).await?;
        s.set_nodelay(true)?;
        let (rd, mut wr) = s.into_split();
        let mut w = Writer::framed();
        ConnectRequest {
            timeout_ms: 30000,
            passwd: vec![0; 16],
            read_only: Some(false),
            ..Default::default()
        }
        .write(&mut w);
        wr.write_all(&w.finish_frame()).await?;
        let mut c = Conn {
            rd: BufReader::new(rd),
            wr,
            xid: 0,
        };
        c.frame().await?;
        Ok(c)
    }

    async fn frame(&mut self) -> std::io::Result<Vec<u8>> {
        let n = self.rd.read_i32().await?;
        let mut b = vec![0; n.max(0) as usize];
        self.rd.read_exact(&mut b).await?;
        Ok(b)
    }

    fn request(&mut self, op: i32, body: &[u8]) -> Vec<u8> {
        self.xid += 1;
        let mut w = Writer::framed();
        RequestHeader { xid: self.xid, op }.write(&mut w);
        w.bytes(body);
        w.finish_frame()
    }

    /// A request answered before the next is sent (setup work).
    async fn call(&mut self, op: i32, body: &[u8]) -> std::io::Result<i32> {
        let f = self.request(op, body);
        self.wr.write_all(&f).await?;
        loop {
            let b = self.frame().await?;
            let h = ReplyHeader::read(&mut Reader::new(&b))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if h.xid != -1 {
                return Ok(h.err);
            }
        }
    }
}

fn create_req(path: &str, data: &[u8]) -> CreateRequest {
    CreateRequest {
        path: path.into(),
        data: data.to_vec(),
        acl: Acl::open_unsafe(),
        flags: 0,
    }
}

fn create_body(path: &str, data: &[u8]) -> Vec<u8> {
    create_req(path, data).encode()
}

/// The request a workload sends as its `n`th operation on connection `c`:
/// its body written to `w`, its opcode returned. Written in place, into the
/// buffer that goes to the socket: a body built apart and then copied into
/// its frame and into the batch cost a 100 KiB multi three more copies, and
/// page faults on every request as glibc gave the big blocks back and took
/// them again (together about a third of this process's CPU samples in a
/// multi10 1x1 10 KiB run).
fn op_for(o: &Opts, c: usize, n: u64, payload: &Payload, w: &mut Writer) -> Option<i32> {
    let data = payload.get(c, n, 0);
    let key = |k: u64| format!("{}/c{c}/k{}", o.prefix, k % o.keys as u64);
    let set = |w: &mut Writer, path: String, data: &[u8]| {
        SetDataRequest {
            path,
            data: data.to_vec(),
            version: -1,
        }
        .write(w)
    };
    let read = |w: &mut Writer, path: String| PathWatch { path, watch: false }.write(w);
    Some(match o.workload.as_str() {
        "create" => {
            create_req(&format!("{}/c{c}/n{n}", o.prefix), data).write(w);
            1
        }
        "populate" => {
            if n >= o.keys.div_ceil(o.conns) as u64 {
                return None;
            }
            create_req(&format!("{}/c{c}/p{n}", o.prefix), data).write(w);
            1
        }
        "set" => {
            set(w, key(n), data);
            5
        }
        "get" => {
            read(w, key(n));
            4
        }
        "exists" => {
            read(w, key(n));
            3
        }
        "children" => {
            read(w, format!("{}/c{c}", o.prefix));
            12
        }
        "children10k" => {
            read(w, format!("{}/wide", o.prefix));
            12
        }
        "delete" => {
            if n >= o.keys as u64 {
                return None;
            }
            DeleteRequest {
                path: key(n),
                version: -1,
            }
            .write(w);
            2
        }
        "multi10" => {
            let ops = (0..10)
                .map(|i| {
                    MultiOp::SetData(SetDataRequest {
                        path: key(n * 10 + i),
                        data: payload.get(c, n, i).to_vec(),
                        version: -1,
                    })
                })
                .collect();
            MultiRequest { ops }.write(w);
            14
        }
        "mix" => {
            if n.is_multiple_of(10) {
                set(w, key(n), data);
                5
            } else {
                read(w, key(n));
                4
            }
        }
        _ => return None,
    })
}

/// Readies the connections for the run: the run's znodes created (not
/// with `--setup skip`: an earlier `--setup only` made them), then a sync
/// on each connection.
async fn setup(o: &Opts, conns: Vec<Conn>, payload: &Arc<Payload>) -> std::io::Result<Vec<Conn>> {
    let mut out = if o.setup == Setup::Skip {
        conns
    } else {
        create_all(o, conns, payload).await?
    };
    // On an ensemble each connection's server must have applied all of the
    // setup (children10k reads what the others created) before the run.
    for conn in out.iter_mut() {
        let sync = PathRequest {
            path: o.prefix.clone(),
        };
        conn.call(9, &sync.encode()).await?;
    }
    Ok(out)
}

/// Creates the namespace and the znodes a workload reads or changes. Each
/// connection creates its own share at the same time as the others: done
/// one connection after another, the idle ones outlived their session
/// timeout on a slow ensemble (16,000 10 KiB creates at 4.5 ms each) and
/// the server closed them before the run began.
async fn create_all(
    o: &Opts,
    mut conns: Vec<Conn>,
    payload: &Arc<Payload>,
) -> std::io::Result<Vec<Conn>> {
    let c0 = &mut conns[0];
    c0.call(1, &create_body(&o.prefix, b"")).await?;
    for c in 0..o.conns {
        c0.call(1, &create_body(&format!("{}/c{c}", o.prefix), b""))
            .await?;
    }
    let wide = o.workload == "children10k";
    if wide {
        c0.call(1, &create_body(&format!("{}/wide", o.prefix), b""))
            .await?;
    }
    let keyed = matches!(
        o.workload.as_str(),
        "set" | "get" | "exists" | "delete" | "multi10" | "mix"
    );
    let n = conns.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let (prefix, keys, payload) = (o.prefix.clone(), o.keys, payload.clone());
            tokio::spawn(async move {
                if wide {
                    for i in (c..10_000).step_by(n) {
                        let path = format!("{prefix}/wide/child-{i:05}");
                        conn.call(1, &create_body(&path, b"")).await?;
                    }
                }
                if keyed {
                    for k in 0..keys {
                        let path = format!("{prefix}/c{c}/k{k}");
                        // Numbered from the top, so no run's op writes
                        // the bytes a key started with.
                        let data = payload.get(c, u64::MAX - k as u64, 0);
                        conn.call(1, &create_body(&path, data)).await?;
                    }
                }
                Ok::<_, std::io::Error>(conn)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.map_err(std::io::Error::other)??);
    }
    Ok(out)
}

async fn drive(
    o: Arc<Opts>,
    c: usize,
    conn: Conn,
    payload: Arc<Payload>,
    deadline: Instant,
) -> (Vec<u32>, u64) {
    let Conn {
        mut rd,
        mut wr,
        mut xid,
    } = conn;
    let inflight = Arc::new(Semaphore::new(o.depth));
    let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::new(Mutex::new(VecDeque::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let done_sending = Arc::new(AtomicU64::new(u64::MAX));
    let (sent2, infl2, errs2, done2) = (
        sent.clone(),
        inflight.clone(),
        errors.clone(),
        done_sending.clone(),
    );
    let multi = o.workload == "multi10";
    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(1 << 16);
        let mut got = 0u64;
        // A lost connection ends the run of this connection: closing the
        // semaphore stops the sender, which would otherwise wait forever
        // for replies that cannot come.
        let _stop = CloseOnDrop(infl2.clone());
        loop {
            if got >= done2.load(Ordering::Acquire) {
                break;
            }
            let n = match rd.read_i32().await {
                Ok(n) => n,
                Err(_) => break,
            };
            let mut b = vec![0; n.max(0) as usize];
            if rd.read_exact(&mut b).await.is_err() {
                break;
            }
            let h = match ReplyHeader::read(&mut Reader::new(&b)) {
                Ok(h) => h,
                Err(_) => break,
            };
            if h.xid < 0 {
                continue;
            }
            // A multi that failed (a znode missing) may come back with no
            // error in its header: its results are then error results, the
            // first one too (type -1). Counted, or a run over znodes its
            // setup never made would pass for a fast one.
            let failed_multi = multi && h.err == 0 && b.get(16..20) == Some(&(-1i32).to_be_bytes());
            if h.err != 0 || failed_multi {
                errs2.fetch_add(1, Ordering::Relaxed);
            }
            let t0 = sent2.lock().unwrap().pop_front();
            if let Some(t0) = t0 {
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            got += 1;
            infl2.add_permits(1);
        }
        lat
    });
    let mut n = 0u64;
    let mut batch = Writer::with_capacity(64 * 1024);
    // Every request the window has room for goes out in one write: one
    // syscall per request made this process, not the server, the limit of
    // the 16x32 read runs (99% of its one thread at ~150k ops/s).
    let mut ended = false;
    while !ended && Instant::now() < deadline {
        let Ok(permit) = inflight.clone().acquire_many_owned(1).await else {
            break;
        };
        permit.forget();
        batch.buf.clear();
        let mut queued = 0;
        loop {
            // The frame goes straight into the batch: its opcode (after
            // the length and the xid) is filled in once the body is written.
            let at = batch.begin_frame();
            RequestHeader {
                xid: xid + 1,
                op: 0,
            }
            .write(&mut batch);
            let Some(op) = op_for(&o, c, n + queued, &payload, &mut batch) else {
                batch.buf.truncate(at);
                ended = true;
                break;
            };
            xid += 1;
            batch.buf[at + 8..at + 12].copy_from_slice(&op.to_be_bytes());
            batch.end_frame(at);
            queued += 1;
            if batch.buf.len() >= 64 * 1024 {
                break;
            }
            match inflight.try_acquire() {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
        }
        if queued == 0 {
            break;
        }
        let now = Instant::now();
        sent.lock()
            .unwrap()
            .extend(std::iter::repeat_n(now, queued as usize));
        if wr.write_all(&batch.buf).await.is_err() {
            break;
        }
        n += queued;
    }
    done_sending.store(n, Ordering::Release);
    // Wake the reader if it already has everything: a ping's reply (xid -2)
    // makes it look at the count again. Closing our half instead would make
    // the server drop replies still on their way (the last few requests
    // would be done but not counted).
    let mut w = Writer::framed();
    RequestHeader { xid: -2, op: 11 }.write(&mut w);
    let _ = wr.write_all(&w.finish_frame()).await;
    let lat = reader.await.unwrap_or_default();
    let _ = wr.shutdown().await;
    // Requests sent and never answered: the connection was lost.
    let lost = sent.lock().unwrap().len() as u64;
    if lost > 0 {
        eprintln!("zkbench: connection {c} lost with {lost} requests unanswered");
    }
    (lat, errors.load(Ordering::Relaxed) + lost)
}

struct CloseOnDrop(Arc<Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Many sessions, one watched znode, one write: how long until every
/// session has heard of it.
async fn fanout(o: Opts) -> std::io::Result<()> {
    let servers: Vec<String> = o.server.split(',').map(str::to_owned).collect();
    let fan = format!("{}/fan", o.prefix);
    let mut c0 = Conn::open(&servers[0]).await?;
    c0.call(1, &create_body(&o.prefix, b"")).await?;
    c0.call(1, &create_body(&fan, b"")).await?;
    let cpu0 = cpu::own_seconds();
    let setup = Instant::now();
    // Open and watch in parallel, a bounded number at a time.
    let gate = Arc::new(Semaphore::new(200));
    let (fired_tx, mut fired_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<()>>();
    for i in 0..o.conns {
        let (server, fan, gate) = (
            servers[i % servers.len()].clone(),
            fan.clone(),
            gate.clone(),
        );
        let (fired_tx, ready_tx) = (fired_tx.clone(), ready_tx.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate open");
            let watch = async {
                let mut c = Conn::open(&server).await?;
                let body = PathWatch {
                    path: fan,
                    watch: true,
                }
                .encode();
                c.call(3, &body).await?;
                Ok::<_, std::io::Error>(c)
            };
            let mut c = match watch.await {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            drop(permit);
            let _ = ready_tx.send(Ok(()));
            // The next frame with xid -1 is the watch event.
            while let Ok(b) = c.frame().await {
                if let Ok(h) = ReplyHeader::read(&mut Reader::new(&b)) {
                    if h.xid == -1 {
                        let _ = fired_tx.send(Instant::now());
                        break;
                    }
                }
            }
            // Keep the session until the run ends.
            std::future::pending::<()>().await;
        });
    }
    drop(fired_tx);
    for _ in 0..o.conns {
        ready_rx.recv().await.expect("watchers report")?;
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    let setup_cpu = cpu::own_seconds() - cpu0;
    eprintln!("zkbench: {} sessions watching {fan}", o.conns);
    tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
    let cpu1 = cpu::own_seconds();
    let t0 = Instant::now();
    let body = SetDataRequest {
        path: fan.clone(),
        data: b"fired".to_vec(),
        version: -1,
    }
    .encode();
    c0.call(5, &body).await?;
    let mut lat = Vec::with_capacity(o.conns);
    let deadline = t0 + Duration::from_secs(120);
    while lat.len() < o.conns {
        match tokio::time::timeout_at(deadline.into(), fired_rx.recv()).await {
            Ok(Some(t)) => lat.push(t.duration_since(t0).as_micros().min(u32::MAX as u128) as u32),
            _ => break,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let missing = o.conns - lat.len();
    lat.sort_unstable();
    println!(
        "{{\"workload\":\"fanout\",\"conns\":{},\"depth\":1,\"size\":5,\"ops\":{},\"errors\":{missing},\"setup_secs\":{setup_secs:.3},\"setup_cpu_pct\":{:.1},\"secs\":{secs:.3},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"bench_cpu_pct\":{:.1}}}",
        o.conns,
        lat.len(),
        100.0 * setup_cpu / setup_secs,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or(0),
        100.0 * (cpu::own_seconds() - cpu1) / secs
    );
    // Exiting closes every session at once.
    std::process::exit(0);
}

async fn run(o: Opts) -> std::io::Result<()> {
    if o.workload == "fanout" {
        return fanout(o).await;
    }
    let payload = Arc::new(Payload::new(o.fill, o.size));
    let mut conns = Vec::new();
    // A comma-separated list spreads the connections over an ensemble.
    let servers: Vec<&str> = o.server.split(',').collect();
    for i in 0..o.conns {
        conns.push(Conn::open(servers[i % servers.len()]).await?);
    }
    if o.workload == "clear" {
        return clear::run(&o.prefix, conns, o.depth).await;
    }
    let conns = setup(&o, conns, &payload).await?;
    if o.setup == Setup::Only {
        return Ok(());
    }
    let o = Arc::new(o);
    let cpu0 = cpu::own_seconds();
    let server0 = cpu::groups_seconds(&o.cpu_of);
    let start = Instant::now();
    // populate runs until its znodes exist, however long that takes.
    let seconds = if o.workload == "populate" {
        86_400.0
    } else {
        o.seconds
    };
    let deadline = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, conn)| tokio::spawn(drive(o.clone(), c, conn, payload.clone(), deadline)))
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("driver task");
        lat.extend(l);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu::own_seconds() - cpu0;
    let server = (!o.cpu_of.is_empty()).then(|| cpu::groups_seconds(&o.cpu_of) - server0);
    lat.sort_unstable();
    report(&o, &lat, errors, secs, cpu, server);
    Ok(())
}

/// The run's JSON line; `lat` sorted. `server`: the CPU seconds of the
/// `--cpu-of` processes over the run, if asked for.
fn report(o: &Opts, lat: &[u32], errors: u64, secs: f64, cpu: f64, server: Option<f64>) {
    let server = server
        .map(|s| {
            format!(
                ",\"server_cpu_us_per_op\":{:.1}",
                s * 1e6 / lat.len().max(1) as f64
            )
        })
        .unwrap_or_default();
    println!(
        "{{\"workload\":\"{}\",\"conns\":{},\"depth\":{},\"size\":{},\"ops\":{},\"errors\":{},\"secs\":{:.3},\"ops_per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"bench_cpu_pct\":{:.1}{server}}}",
        o.workload, o.conns, o.depth, o.size, lat.len(), errors, secs, lat.len() as f64 / secs,
        pct(lat, 0.5), pct(lat, 0.99), pct(lat, 0.999), 100.0 * cpu / secs
    );
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("zkbench: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    if o.workload == "fsync" {
        match disk::run(std::path::Path::new(&o.dir), o.conns, o.size, o.seconds) {
            Ok(mut m) => {
                m.lat.sort_unstable();
                report(&o, &m.lat, 0, m.secs, m.cpu, None);
                return;
            }
            Err(e) => {
                eprintln!("zkbench: {}: {e}", o.dir);
                std::process::exit(1);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(o)) {
        eprintln!("zkbench: {e}");
        std::process::exit(1);
    }
}
