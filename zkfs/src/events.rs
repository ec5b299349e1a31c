//! From watch events to fresh caches and real inotify events.
//!
//! One persistent recursive watch on the mount's root reports every create,
//! delete and data change under it. For each we
//! 1. invalidate the kernel's cached attributes and directory entries, so the
//!    next `cat`/`ls` asks us (freshness by invalidation, not by timeout), and
//! 2. unless the change was our own (the kernel already told inotify about a
//!    local call), repeat it through the mount from this thread: mknod/mkdir for
//!    a create, unlink/rmdir for a delete, open+write+close for a data change.
//!    The request loop recognises this thread's id and answers those requests
//!    from state without touching the server, and the kernel raises IN_CREATE,
//!    IN_DELETE, IN_MODIFY and IN_CLOSE_WRITE to every watcher. FUSE raises no
//!    inotify event for a notify/invalidate message, so this is the route.
//!
//! Only inodes the kernel holds can have inotify watches, so events for paths
//! the kernel has never looked up are dropped after invalidation.

use std::ffi::{CString, OsStr};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use fuser::Notifier;
use zk_proto::ErrorCode;

use crate::client::Notice;
use crate::names::{self, DATA_FILE};
use crate::shared::{Kind, Reflect, Shared, Table};

const CREATED: i32 = 1;
const DELETED: i32 = 2;
const CHANGED: i32 = 3;

pub fn run(sh: Arc<Shared>, notifier: Notifier, rx: Receiver<Notice>, mountpoint: PathBuf) {
    *sh.reflector_tid.lock().unwrap() = unsafe { libc::gettid() } as u32;
    while let Ok(n) = rx.recv() {
        match n {
            Notice::Connected => {
                // Events may have been missed while disconnected.
                let inos: Vec<u64> = sh.table.lock().unwrap().by_ino.keys().copied().collect();
                for ino in inos {
                    let _ = notifier.inval_inode(ino, 0, 0);
                }
            }
            Notice::Expired => sh.locks.lost_all(),
            Notice::Node(e) => {
                if e.path.contains(&format!("/{}", names::LOCK_PREFIX)) {
                    sh.locks.on_event();
                }
                handle(&sh, &notifier, &mountpoint, e.typ, &e.path);
            }
        }
    }
}

fn ino_for(sh: &Shared, path: &str, data_file: bool) -> Option<u64> {
    if path == "/" && !data_file {
        return Some(1);
    }
    sh.table
        .lock()
        .unwrap()
        .by_path
        .get(&Table::key(path, data_file))
        .copied()
}

fn handle(sh: &Shared, notifier: &Notifier, mnt: &Path, typ: i32, path: &str) {
    if path == "/" && typ != CHANGED {
        return;
    }
    let (parent, name) = names::split(path);
    sh.forget_listed(path);
    sh.forget_listed(parent);
    let own = sh.consume_echo(typ, path);
    let internal = crate::fs::internal(path);
    let parent_ino = ino_for(sh, parent, false);
    // 1. caches
    match typ {
        CHANGED => {
            for df in [false, true] {
                if let Some(ino) = ino_for(sh, path, df) {
                    let _ = notifier.inval_inode(ino, 0, 0);
                }
            }
        }
        CREATED | DELETED => {
            if let Some(p) = parent_ino {
                let _ = notifier.inval_entry(p, OsStr::new(name));
                let _ = notifier.inval_inode(p, 0, 0);
                // A file's first child makes it a directory: the grandparent's
                // entry for it must be looked up again.
                let (gp, pname) = names::split(parent);
                if parent != "/" {
                    if let Some(g) = ino_for(sh, gp, false) {
                        if sh.entry(p).is_some_and(|e| e.kind == Kind::File) {
                            let _ = notifier.inval_entry(g, OsStr::new(pname));
                        }
                    }
                }
            }
            if typ == DELETED {
                if let Some(ino) = ino_for(sh, path, false) {
                    let _ = notifier.inval_inode(ino, 0, 0);
                }
            }
        }
        _ => {}
    }
    if own || internal {
        return;
    }
    // 2. inotify, through the mount
    let target = mnt.join(path.trim_start_matches('/'));
    match typ {
        CHANGED => {
            let kind = match (ino_for(sh, path, false), ino_for(sh, path, true)) {
                (Some(ino), _) => sh.entry(ino).map(|e| e.kind),
                (None, Some(_)) => Some(Kind::Dir),
                _ => None,
            };
            let file = match kind {
                Some(Kind::File) => target,
                Some(Kind::Dir) => target.join(DATA_FILE),
                None => return,
            };
            touch_modify(&file);
            for df in [false, true] {
                if let Some(ino) = ino_for(sh, path, df) {
                    let _ = notifier.inval_inode(ino, 0, 0);
                }
            }
        }
        CREATED => {
            if parent_ino.is_none() {
                return;
            }
            let kind = match sh.zk.exists(path) {
                Ok(st) => sh.kind(path, &st),
                Err(ErrorCode::NO_NODE) => return, // already gone again
                Err(_) => return,
            };
            sh.reflecting
                .lock()
                .unwrap()
                .insert(path.to_string(), Reflect::Create);
            if let Some(p) = parent_ino {
                let _ = notifier.inval_entry(p, OsStr::new(name));
            }
            let c = cpath(&target);
            unsafe {
                if kind == Kind::Dir {
                    libc::mkdir(c.as_ptr(), 0o755);
                } else {
                    libc::mknod(c.as_ptr(), libc::S_IFREG | 0o644, 0);
                }
            }
            sh.reflecting.lock().unwrap().remove(path);
        }
        DELETED => {
            let Some(p) = parent_ino else { return };
            let ino = ino_for(sh, path, false).unwrap_or_else(|| names::ino_of(path));
            let kind = sh.entry(ino).map(|e| e.kind).unwrap_or(Kind::File);
            sh.reflecting
                .lock()
                .unwrap()
                .insert(path.to_string(), Reflect::Delete(ino, kind));
            let _ = notifier.inval_entry(p, OsStr::new(name));
            let c = cpath(&target);
            unsafe {
                if kind == Kind::Dir {
                    libc::rmdir(c.as_ptr());
                } else {
                    libc::unlink(c.as_ptr());
                }
            }
            sh.reflecting.lock().unwrap().remove(path);
            let _ = notifier.inval_entry(p, OsStr::new(name));
        }
        _ => {}
    }
}

fn cpath(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// open for writing, write one byte (ignored by the request loop), close:
/// watchers see IN_OPEN, IN_MODIFY, IN_CLOSE_WRITE.
fn touch_modify(p: &Path) {
    let c = cpath(p);
    unsafe {
        let fd = libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::pwrite(fd, c"".as_ptr() as *const libc::c_void, 1, 0);
            libc::close(fd);
        }
    }
}
