//! Sessions and their expiry, with time passed in.
//!
//! Deadlines are kept in buckets one tick wide, as the reference's
//! `ExpiryQueue` does, so touching a busy session is usually a no-op and an
//! expiry sweep looks only at buckets that are due.

use std::collections::{BTreeMap, HashMap, HashSet};

use zk_proto::records::Id;

pub type ConnId = u64;

#[derive(Debug, Clone)]
pub struct Session {
    pub id: i64,
    pub timeout_ms: i32,
    pub passwd: [u8; 16],
    /// The connection the session is attached to, if any.
    pub conn: Option<ConnId>,
    /// Identities added by auth packets (the `ip` identity lives on the connection).
    pub auth: Vec<Id>,
    /// Bucket (monotonic ms) this session expires at unless touched.
    expires_at: i64,
    /// Set once a close or expiry has been decided, so it happens once.
    pub closing: bool,
}

pub struct SessionTable {
    sessions: HashMap<i64, Session>,
    buckets: BTreeMap<i64, HashSet<i64>>,
    bucket_ms: i64,
}

impl SessionTable {
    pub fn new(tick_ms: i64) -> SessionTable {
        SessionTable {
            sessions: HashMap::new(),
            buckets: BTreeMap::new(),
            bucket_ms: tick_ms.max(1),
        }
    }

    fn bucket_for(&self, now_ms: i64, timeout_ms: i32) -> i64 {
        (((now_ms + timeout_ms as i64) / self.bucket_ms) + 1) * self.bucket_ms
    }

    pub fn add(&mut self, id: i64, timeout_ms: i32, passwd: [u8; 16], now_ms: i64) {
        let expires_at = self.bucket_for(now_ms, timeout_ms);
        self.buckets.entry(expires_at).or_default().insert(id);
        self.sessions.insert(
            id,
            Session {
                id,
                timeout_ms,
                passwd,
                conn: None,
                auth: Vec::new(),
                expires_at,
                closing: false,
            },
        );
    }

    pub fn remove(&mut self, id: i64) -> Option<Session> {
        let s = self.sessions.remove(&id)?;
        if let Some(b) = self.buckets.get_mut(&s.expires_at) {
            b.remove(&id);
            if b.is_empty() {
                self.buckets.remove(&s.expires_at);
            }
        }
        Some(s)
    }

    pub fn get(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Pushes the session's deadline to `now + timeout`.
    pub fn touch(&mut self, id: i64, now_ms: i64) {
        let Some(timeout) = self.sessions.get(&id).map(|s| s.timeout_ms) else {
            return;
        };
        let new_at = self.bucket_for(now_ms, timeout);
        let s = self.sessions.get_mut(&id).expect("checked above");
        if s.expires_at == new_at {
            return;
        }
        let old_at = std::mem::replace(&mut s.expires_at, new_at);
        if let Some(b) = self.buckets.get_mut(&old_at) {
            b.remove(&id);
            if b.is_empty() {
                self.buckets.remove(&old_at);
            }
        }
        self.buckets.entry(new_at).or_default().insert(id);
    }

    pub fn set_timeout(&mut self, id: i64, timeout_ms: i32, now_ms: i64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.timeout_ms = timeout_ms;
        }
        self.touch(id, now_ms);
    }

    /// Sessions whose deadline has passed and that are not already closing,
    /// in id order (so the result does not depend on hash order).
    pub fn expired(&self, now_ms: i64) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .buckets
            .range(..=now_ms)
            .flat_map(|(_, ids)| ids.iter().copied())
            .filter(|id| self.sessions.get(id).is_some_and(|s| !s.closing))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_only_after_timeout_and_touch_extends() {
        let mut t = SessionTable::new(100);
        t.add(1, 1000, [0; 16], 0);
        assert!(t.expired(1000).is_empty());
        assert_eq!(t.expired(1100), vec![1]);
        t.touch(1, 900);
        assert!(t.expired(1100).is_empty());
        assert_eq!(t.expired(2000), vec![1]);
        t.get_mut(1).unwrap().closing = true;
        assert!(t.expired(5000).is_empty());
        t.remove(1);
        assert!(t.is_empty());
    }
}
