//! flock(2) and fcntl(2) locks as ZooKeeper locks (the lock recipe).
//!
//! Locking FILE queues an ephemeral-sequential znode `lock-NNNNNNNNNN` under the
//! container `.zkfs-lock.FILE` next to it; the lowest sequence holds the lock,
//! each waiter watches its predecessor, so hand-over is FIFO (fair). The lock
//! ends when the holder unlocks, closes the file, dies (the kernel releases its
//! files) or loses its session (the ephemeral goes). The holder's czxid is its
//! fencing token: it only grows across the ensemble, so a resource can refuse a
//! writer whose token is older than one it has seen.
//!
//! Read and write locks are both exclusive here; byte ranges lock the whole file.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use zk_proto::records::Acl;
use zk_proto::ErrorCode;

use crate::errno::errno;
use crate::names::{join, lock_dir};
use crate::shared::Shared;

#[derive(Debug, Clone)]
struct Held {
    owner: u64,
    path: String,
    node: String,
    token: i64,
}

#[derive(Default)]
struct State {
    held: Vec<Held>,
    /// (owner, path) of waits to abandon (the file was closed while waiting).
    cancelled: Vec<(u64, String)>,
    waiting: HashMap<(u64, String), ()>,
    events: u64,
}

#[derive(Default)]
pub struct Locks {
    st: Mutex<State>,
    cv: Condvar,
}

fn seq_of(name: &str) -> u64 {
    name.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

impl Locks {
    /// A znode under some lock directory changed: waiters look again.
    pub fn on_event(&self) {
        let mut st = self.st.lock().unwrap();
        st.events += 1;
        self.cv.notify_all();
    }

    /// The session expired: every lock is gone with its ephemeral.
    pub fn lost_all(&self) {
        let mut st = self.st.lock().unwrap();
        for h in st.held.drain(..) {
            log::error!(
                "lock on {} lost with the session (token {})",
                h.path,
                h.token
            );
        }
        self.cv.notify_all();
    }

    pub fn token(&self, path: &str) -> Option<i64> {
        self.st
            .lock()
            .unwrap()
            .held
            .iter()
            .find(|h| h.path == path)
            .map(|h| h.token)
    }

    /// Is the lock on `path` held by anyone but `owner`?
    pub fn holder(&self, sh: &Shared, path: &str, owner: u64) -> Result<bool, i32> {
        if let Some(h) = self.st.lock().unwrap().held.iter().find(|h| h.path == path) {
            return Ok(h.owner != owner);
        }
        match sh.zk.children(&lock_dir(path)) {
            Ok((c, _)) => Ok(!c.is_empty()),
            Err(ErrorCode::NO_NODE) => Ok(false),
            Err(e) => Err(errno(e)),
        }
    }

    pub fn release(&self, sh: &Shared, owner: u64, path: &str) {
        let mine: Vec<Held> = {
            let mut st = self.st.lock().unwrap();
            if st.waiting.contains_key(&(owner, path.to_string())) {
                st.cancelled.push((owner, path.to_string()));
                self.cv.notify_all();
            }
            let (mine, rest) = st
                .held
                .drain(..)
                .partition(|h| h.owner == owner && h.path == path);
            st.held = rest;
            mine
        };
        for h in mine {
            if let Err(e) = sh.zk.delete(&h.node, -1) {
                if e != ErrorCode::NO_NODE {
                    log::warn!("unlock {}: {}", h.path, e.name());
                }
            }
        }
    }

    fn cancelled(&self, owner: u64, path: &str) -> bool {
        let mut st = self.st.lock().unwrap();
        if let Some(i) = st
            .cancelled
            .iter()
            .position(|(o, p)| *o == owner && p == path)
        {
            st.cancelled.remove(i);
            true
        } else {
            false
        }
    }

    pub fn acquire(&self, sh: &Shared, path: &str, owner: u64, sleep: bool) -> Result<(), i32> {
        if self
            .st
            .lock()
            .unwrap()
            .held
            .iter()
            .any(|h| h.owner == owner && h.path == path)
        {
            return Ok(()); // re-lock or up/downgrade by the holder
        }
        let dir = lock_dir(path);
        let me = format!("{}:{}", hostname(), std::process::id());
        let mut made = None;
        for _ in 0..3 {
            match sh.zk.create(&dir, b"", &Acl::open_unsafe(), 4, 0) {
                Ok(_) | Err(ErrorCode::NODE_EXISTS) => {}
                Err(e) => {
                    log::warn!("lock {path}: creating {dir}: {}", e.name());
                    return Err(errno(e));
                }
            }
            // The container may be reaped between the two calls: try again.
            match sh.zk.create(
                &join(&dir, "lock-"),
                me.as_bytes(),
                &Acl::open_unsafe(),
                3,
                0,
            ) {
                Ok(x) => {
                    made = Some(x);
                    break;
                }
                Err(ErrorCode::NO_NODE) => continue,
                Err(e) => {
                    log::warn!("lock {path}: queueing under {dir}: {}", e.name());
                    return Err(errno(e));
                }
            }
        }
        let Some((node, stat)) = made else {
            return Err(libc::EAGAIN);
        };
        let my_name = node.rsplit('/').next().unwrap_or("").to_string();
        let key = (owner, path.to_string());
        self.st.lock().unwrap().waiting.insert(key.clone(), ());
        let give_up = |e: i32| {
            log::debug!("lock {path} for {owner:x}: errno {e}");
            let _ = sh.zk.delete(&node, -1);
            self.st.lock().unwrap().waiting.remove(&key);
            Err(e)
        };
        loop {
            if self.cancelled(owner, path) {
                return give_up(libc::EINTR);
            }
            let seen = self.st.lock().unwrap().events;
            let mut kids = match sh.zk.children(&dir) {
                Ok((k, _)) => k,
                Err(e) => return give_up(errno(e)),
            };
            kids.retain(|k| k.starts_with("lock-"));
            kids.sort_by_key(|k| seq_of(k));
            let Some(pos) = kids.iter().position(|k| *k == my_name) else {
                // Our node is gone: the session expired under us.
                self.st.lock().unwrap().waiting.remove(&key);
                return Err(libc::EKEYEXPIRED);
            };
            if pos == 0 {
                let mut st = self.st.lock().unwrap();
                st.waiting.remove(&key);
                st.held.push(Held {
                    owner,
                    path: path.to_string(),
                    node: node.clone(),
                    token: stat.czxid,
                });
                return Ok(());
            }
            if !sleep {
                return give_up(libc::EWOULDBLOCK);
            }
            // Wait for any change in a lock directory (the recursive watch tells
            // us), re-checking once a second in case an event was missed.
            let st = self.st.lock().unwrap();
            if st.events == seen {
                let _ = self.cv.wait_timeout(st, Duration::from_secs(1)).unwrap();
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
