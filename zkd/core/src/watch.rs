//! One-shot data and child watches, per connection as in the reference (a
//! client re-registers them with setWatches after it reconnects).

use std::collections::{HashMap, HashSet};

use zk_proto::EventType;

use crate::session::ConnId;

#[derive(Default)]
pub struct WatchTable {
    data: HashMap<String, HashSet<ConnId>>,
    child: HashMap<String, HashSet<ConnId>>,
    by_conn: HashMap<ConnId, (HashSet<String>, HashSet<String>)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Data,
    Child,
}

impl WatchTable {
    pub fn add(&mut self, kind: Kind, path: &str, conn: ConnId) {
        let (table, mine) = match kind {
            Kind::Data => (&mut self.data, &mut self.by_conn.entry(conn).or_default().0),
            Kind::Child => (
                &mut self.child,
                &mut self.by_conn.entry(conn).or_default().1,
            ),
        };
        table.entry(path.to_owned()).or_default().insert(conn);
        mine.insert(path.to_owned());
    }

    fn take(&mut self, kind: Kind, path: &str) -> HashSet<ConnId> {
        let table = match kind {
            Kind::Data => &mut self.data,
            Kind::Child => &mut self.child,
        };
        let conns = table.remove(path).unwrap_or_default();
        for c in &conns {
            if let Some(m) = self.by_conn.get_mut(c) {
                match kind {
                    Kind::Data => m.0.remove(path),
                    Kind::Child => m.1.remove(path),
                };
            }
        }
        conns
    }

    /// Fires the watches an event triggers (removing them) and returns the
    /// connections to notify, each once, in a stable order.
    pub fn trigger(&mut self, event: EventType, path: &str) -> Vec<ConnId> {
        let mut conns: Vec<ConnId> = match event {
            EventType::NodeCreated | EventType::NodeDataChanged => {
                self.take(Kind::Data, path).into_iter().collect()
            }
            EventType::NodeChildrenChanged => self.take(Kind::Child, path).into_iter().collect(),
            EventType::NodeDeleted => {
                // A connection watching both data and children gets one event.
                let mut s = self.take(Kind::Data, path);
                s.extend(self.take(Kind::Child, path));
                s.into_iter().collect()
            }
            _ => Vec::new(),
        };
        conns.sort_unstable();
        conns
    }

    pub fn remove_conn(&mut self, conn: ConnId) {
        if let Some((d, c)) = self.by_conn.remove(&conn) {
            for p in d {
                if let Some(s) = self.data.get_mut(&p) {
                    s.remove(&conn);
                    if s.is_empty() {
                        self.data.remove(&p);
                    }
                }
            }
            for p in c {
                if let Some(s) = self.child.get_mut(&p) {
                    s.remove(&conn);
                    if s.is_empty() {
                        self.child.remove(&p);
                    }
                }
            }
        }
    }

    /// Total watches, as `zk_watch_count` reports.
    pub fn count(&self) -> usize {
        self.data.values().map(|s| s.len()).sum::<usize>()
            + self.child.values().map(|s| s.len()).sum::<usize>()
    }

    pub fn paths(&self) -> usize {
        self.data.len() + self.child.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_and_deduplicated_delete() {
        let mut w = WatchTable::default();
        w.add(Kind::Data, "/a", 1);
        w.add(Kind::Child, "/a", 1);
        w.add(Kind::Data, "/a", 2);
        assert_eq!(w.trigger(EventType::NodeDeleted, "/a"), vec![1, 2]);
        assert!(w.trigger(EventType::NodeDeleted, "/a").is_empty());
        w.add(Kind::Child, "/b", 3);
        w.remove_conn(3);
        assert!(w.trigger(EventType::NodeChildrenChanged, "/b").is_empty());
        assert_eq!(w.count(), 0);
    }
}
