//! `zkfs wait PATH`: block until the next change of PATH on a zkfs mount, for
//! scripts that would otherwise poll. It is inotify on the mount, which zkfs
//! feeds with other clients' changes, so it needs no connection of its own.
//! Exit 0 after a change (the event is printed), 1 on error, 2 on timeout.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const MASK: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO;

fn names(mask: u32) -> String {
    let all = [
        (libc::IN_MODIFY, "MODIFY"),
        (libc::IN_CLOSE_WRITE, "CLOSE_WRITE"),
        (libc::IN_ATTRIB, "ATTRIB"),
        (libc::IN_CREATE, "CREATE"),
        (libc::IN_DELETE, "DELETE"),
        (libc::IN_DELETE_SELF, "DELETE_SELF"),
        (libc::IN_MOVE_SELF, "MOVE_SELF"),
        (libc::IN_MOVED_FROM, "MOVED_FROM"),
        (libc::IN_MOVED_TO, "MOVED_TO"),
        (libc::IN_ISDIR, "ISDIR"),
    ];
    all.iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn main(args: &[String]) -> i32 {
    let mut timeout: Option<f64> = None;
    let mut path = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-t" | "--timeout" => {
                i += 1;
                timeout = args.get(i).and_then(|s| s.parse().ok());
                if timeout.is_none() {
                    eprintln!("zkfs wait: -t needs a number of seconds");
                    return 1;
                }
            }
            p => path = Some(p.to_string()),
        }
        i += 1;
    }
    let Some(path) = path else {
        eprintln!("usage: zkfs wait [-t SECONDS] PATH");
        return 1;
    };
    let p = Path::new(&path);
    // A path that does not exist yet: wait for its creation in the parent.
    let (watch, only) = if p.exists() {
        (p.to_path_buf(), None)
    } else {
        match (p.parent(), p.file_name()) {
            (Some(d), Some(n)) if d.as_os_str().is_empty() || d.exists() => (
                if d.as_os_str().is_empty() {
                    Path::new(".").to_path_buf()
                } else {
                    d.to_path_buf()
                },
                Some(n.to_os_string()),
            ),
            _ => {
                eprintln!("zkfs wait: {path}: no such file or directory");
                return 1;
            }
        }
    };
    unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC);
        if fd < 0 {
            eprintln!("zkfs wait: inotify: {}", std::io::Error::last_os_error());
            return 1;
        }
        let c = CString::new(watch.as_os_str().as_bytes()).unwrap();
        let mask = if only.is_some() {
            libc::IN_CREATE | libc::IN_MOVED_TO
        } else {
            MASK
        };
        if libc::inotify_add_watch(fd, c.as_ptr(), mask) < 0 {
            eprintln!(
                "zkfs wait: {}: {}",
                watch.display(),
                std::io::Error::last_os_error()
            );
            return 1;
        }
        let deadline =
            timeout.map(|t| std::time::Instant::now() + std::time::Duration::from_secs_f64(t));
        let mut buf = [0u8; 8192];
        loop {
            let wait_ms = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return 2;
                    }
                    left.as_millis().min(i32::MAX as u128) as i32
                }
                None => -1,
            };
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let r = libc::poll(&mut pfd, 1, wait_ms);
            if r == 0 {
                continue;
            }
            if r < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return 1;
            }
            let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
            if n <= 0 {
                return 1;
            }
            let mut off = 0usize;
            while off + 16 <= n as usize {
                let ev = &*(buf.as_ptr().add(off) as *const libc::inotify_event);
                let name_bytes = &buf[off + 16..off + 16 + ev.len as usize];
                let name = std::ffi::CStr::from_bytes_until_nul(name_bytes)
                    .map(|c| c.to_bytes().to_vec())
                    .unwrap_or_default();
                off += 16 + ev.len as usize;
                if let Some(want) = &only {
                    if name != want.as_bytes() {
                        continue;
                    }
                }
                let shown = if name.is_empty() {
                    path.clone()
                } else {
                    watch
                        .join(std::ffi::OsStr::from_bytes(&name))
                        .display()
                        .to_string()
                };
                println!("{} {}", names(ev.mask), shown);
                return 0;
            }
        }
    }
}
