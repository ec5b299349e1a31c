//! zkfs: a ZooKeeper tree (zkd or Apache ZooKeeper) as a FUSE filesystem.
//!
//! Map of the crate:
//! - `options` — command line and `-o` mount options.
//! - `client`  — blocking ZooKeeper client: one session, failover, watches.
//! - `names`   — path conventions: `.data`, `NAME@mods`, inode numbers.
//! - `shared`  — the inode table and what the threads share; the file/dir rule.
//! - `fs`      — the FUSE request handlers.
//! - `events`  — watch events → cache invalidation and real inotify events.
//! - `locks`   — flock/fcntl as the ZooKeeper lock recipe, fencing tokens.
//! - `xattr`   — Stat, ACL, session and lock token as extended attributes.
//! - `errno`   — the ZooKeeper error → errno table.
//! - `wait`    — `zkfs wait PATH`.
//! - `detach`  — lazy unmount when a signal finds the mount busy.

mod client;
mod detach;
mod errno;
mod events;
mod fs;
mod locks;
mod names;
mod options;
mod shared;
mod wait;
mod xattr;

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::{mpsc, Arc, Mutex};

use base64::Engine;
use sha1::{Digest, Sha1};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None | Some("-h") | Some("--help") => {
            println!("{}", options::USAGE);
            0
        }
        Some("-V") | Some("--version") => {
            println!("zkfs {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("wait") => wait::main(&args[1..]),
        Some("create") => create_main(&args[1..]),
        _ => match options::parse(&args) {
            Ok(o) => mount_main(o),
            Err(e) => {
                eprintln!("zkfs: {e}\n{}", options::USAGE);
                64
            }
        },
    };
    std::process::exit(code);
}

/// `zkfs create PATH [DATA]`: create through the mount (so the znode belongs to
/// the mount's session) and print the path it got — the way a script learns
/// the name of a sequential znode.
fn create_main(args: &[String]) -> i32 {
    let Some(path) = args.first() else {
        eprintln!("usage: zkfs create PATH [DATA]");
        return 64;
    };
    let data = args
        .get(1)
        .map(|s| s.as_bytes().to_vec())
        .unwrap_or_default();
    let f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("zkfs create: {path}: {e}");
            return 1;
        }
    };
    let mut f = f;
    if let Err(e) = f.write_all(&data).and_then(|_| f.sync_all()) {
        eprintln!("zkfs create: {path}: {e}");
        return 1;
    }
    let mut buf = vec![0u8; 4096];
    let n = unsafe {
        use std::os::fd::AsRawFd;
        libc::fgetxattr(
            f.as_raw_fd(),
            c"user.zk.name".as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if n < 0 {
        eprintln!(
            "zkfs create: {path}: not on a zkfs mount? ({})",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    buf.truncate(n as usize);
    let dir = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new("."));
    println!("{}", dir.join(std::ffi::OsStr::from_bytes(&buf)).display());
    0
}

fn digest_id(user: &str, pass: &str) -> String {
    let h = Sha1::digest(format!("{user}:{pass}").as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(h)
    )
}

fn mount_main(o: options::Options) -> i32 {
    let mnt = match std::fs::canonicalize(&o.mountpoint) {
        Ok(p) if p.is_dir() => p,
        _ => {
            eprintln!("zkfs: mount point {} is not a directory", o.mountpoint);
            return 1;
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(if o.debug {
        "debug"
    } else {
        "warn"
    }))
    .format_timestamp_millis()
    .init();
    // Daemonize before any thread exists; the parent waits for the child to
    // report the mount, so `zkfs ... && ls MOUNT` works.
    let mut report: Option<std::fs::File> = None;
    if !o.foreground {
        let mut fds = [0; 2];
        unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                eprintln!("zkfs: pipe failed");
                return 1;
            }
            match libc::fork() {
                -1 => {
                    eprintln!("zkfs: fork failed");
                    return 1;
                }
                0 => {
                    libc::close(fds[0]);
                    libc::setsid();
                    use std::os::fd::FromRawFd;
                    report = Some(std::fs::File::from_raw_fd(fds[1]));
                }
                _ => {
                    libc::close(fds[1]);
                    use std::os::fd::FromRawFd;
                    let mut r = std::fs::File::from_raw_fd(fds[0]);
                    let mut msg = String::new();
                    let _ = r.read_to_string(&mut msg);
                    if msg == "ok" {
                        return 0;
                    }
                    eprint!(
                        "{}",
                        if msg.is_empty() {
                            "zkfs: mount process died\n".to_string()
                        } else {
                            msg
                        }
                    );
                    return 1;
                }
            }
        }
    }
    // Signals go to one thread that unmounts; block them everywhere else.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let fail = |report: &mut Option<std::fs::File>, msg: String| -> i32 {
        match report {
            Some(f) => {
                let _ = writeln!(f, "zkfs: {msg}");
            }
            None => eprintln!("zkfs: {msg}"),
        }
        1
    };
    let (tx, rx) = mpsc::channel();
    let cfg = client::Config {
        hosts: o.hosts.clone(),
        chroot: o.chroot.clone(),
        timeout_ms: o.timeout_ms,
        auth: o
            .digest
            .iter()
            .map(|(u, p)| ("digest".to_string(), format!("{u}:{p}").into_bytes()))
            .collect(),
        recursive_watches: vec!["/".into()],
    };
    let zk = match client::Client::connect(cfg, tx) {
        Ok(c) => c,
        Err(_) => {
            return fail(
                &mut report,
                format!("cannot reach any server of {}", o.source),
            )
        }
    };
    if let Err(e) = zk.exists("/") {
        return fail(
            &mut report,
            format!(
                "{}: {}",
                if o.chroot.is_empty() { "/" } else { &o.chroot },
                e.name()
            ),
        );
    }
    let sh = Arc::new(shared::Shared {
        zk: zk.clone(),
        opts: o.clone(),
        table: Mutex::new(shared::Table::default()),
        echoes: Mutex::new(Vec::new()),
        reflecting: Mutex::new(Default::default()),
        reflector_tid: Mutex::new(0),
        locks: Default::default(),
        made_dirs: Default::default(),
        listed: Default::default(),
        my_ids: o
            .digest
            .iter()
            .map(|(u, p)| ("digest".to_string(), digest_id(u, p)))
            .collect(),
    });
    let mut mopts = vec![
        fuser::MountOption::FSName(o.source.clone()),
        fuser::MountOption::Subtype("zkfs".into()),
    ];
    if o.allow_other {
        mopts.push(fuser::MountOption::AllowOther);
    }
    let mut session = match fuser::Session::new(fs::ZkFs::new(sh.clone()), &mnt, &mopts) {
        Ok(s) => s,
        Err(e) => return fail(&mut report, format!("mount {}: {e}", mnt.display())),
    };
    let notifier = session.notifier();
    let mut unmounter = session.unmount_callable();
    {
        let (sh, mnt) = (sh.clone(), mnt.clone());
        std::thread::Builder::new()
            .name("reflector".into())
            .spawn(move || events::run(sh, notifier, rx, mnt))
            .unwrap();
    }
    {
        let mnt = mnt.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                    libc::sigaddset(&mut set, s);
                }
                let mut sig = 0;
                libc::sigwait(&set, &mut sig);
                log::info!("signal {sig}: unmounting {}", mnt.display());
                let _ = unmounter.unmount();
                // Busy (a process has a file open or its cwd below): detach
                // now, serve the open files until they close, then exit.
                if detach::is_fuse_mount(&mnt) {
                    match detach::lazily(&mnt) {
                        Ok(()) => log::warn!(
                            "{} was busy: detached; zkfs exits when its open files are closed",
                            mnt.display()
                        ),
                        Err(e) => log::error!("cannot unmount {}: {e}", mnt.display()),
                    }
                }
            })
            .unwrap();
    }
    if let Some(mut f) = report.take() {
        let _ = f.write_all(b"ok");
        drop(f);
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
            libc::chdir(c"/".as_ptr());
        }
    }
    let r = session.run();
    drop(session);
    zk.close();
    match r {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}
