//! Watches, per connection as in the reference (a client re-registers them
//! with setWatches/setWatches2 after it reconnects).
//!
//! Four kinds: one-shot data watches (getData, exists), one-shot child
//! watches (getChildren), persistent watches (addWatch mode 0: data and child
//! events of one path, never removed by firing) and persistent recursive
//! watches (addWatch mode 1: data events of a path and everything below it).
//! A connection may hold several kinds on one path at once (3.9 semantics;
//! 3.8 let the last one set replace the others, ZOOKEEPER-4466); one change
//! notifies each connection at most once.

use std::collections::{HashMap, HashSet};

use zk_proto::EventType;

use crate::path;
use crate::session::ConnId;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Kind {
    Data,
    Child,
    Persistent,
    Recursive,
}

const KINDS: [Kind; 4] = [Kind::Data, Kind::Child, Kind::Persistent, Kind::Recursive];

#[derive(Default)]
pub struct WatchTable {
    tables: [HashMap<String, HashSet<ConnId>>; 4],
    by_conn: HashMap<ConnId, HashSet<(Kind, String)>>,
}

fn idx(k: Kind) -> usize {
    match k {
        Kind::Data => 0,
        Kind::Child => 1,
        Kind::Persistent => 2,
        Kind::Recursive => 3,
    }
}

/// `WatcherType` of checkWatches/removeWatches: which kinds it covers, as
/// 3.9 defines them (Children and Data mean the one-shot kinds only). 3.8
/// answered checkWatches true when any connection watched the path.
pub fn kinds_of_watcher_type(t: i32) -> Option<&'static [Kind]> {
    Some(match t {
        1 => &[Kind::Child],
        2 => &[Kind::Data],
        3 => &KINDS,
        4 => &[Kind::Persistent],
        5 => &[Kind::Recursive],
        _ => return None,
    })
}

impl WatchTable {
    pub fn add(&mut self, kind: Kind, path: &str, conn: ConnId) {
        self.tables[idx(kind)]
            .entry(path.to_owned())
            .or_default()
            .insert(conn);
        self.by_conn
            .entry(conn)
            .or_default()
            .insert((kind, path.to_owned()));
    }

    pub fn has(&self, kind: Kind, path: &str, conn: ConnId) -> bool {
        self.tables[idx(kind)]
            .get(path)
            .is_some_and(|s| s.contains(&conn))
    }

    /// Removes one watch; true if it was there.
    pub fn remove(&mut self, kind: Kind, path: &str, conn: ConnId) -> bool {
        let table = &mut self.tables[idx(kind)];
        let Some(set) = table.get_mut(path) else {
            return false;
        };
        let was = set.remove(&conn);
        if set.is_empty() {
            table.remove(path);
        }
        if let Some(m) = self.by_conn.get_mut(&conn) {
            m.remove(&(kind, path.to_owned()));
        }
        was
    }

    fn take(&mut self, kind: Kind, path: &str, out: &mut Vec<ConnId>) {
        let conns = self.tables[idx(kind)].remove(path).unwrap_or_default();
        for c in conns {
            if let Some(m) = self.by_conn.get_mut(&c) {
                m.remove(&(kind, path.to_owned()));
            }
            out.push(c);
        }
    }

    fn peek(&self, kind: Kind, path: &str, out: &mut Vec<ConnId>) {
        if let Some(s) = self.tables[idx(kind)].get(path) {
            out.extend(s.iter().copied());
        }
    }

    /// Fires the watches an event triggers (removing the one-shot ones) and
    /// returns the connections to notify, each once, in a stable order.
    pub fn trigger(&mut self, event: EventType, p: &str) -> Vec<ConnId> {
        let mut conns = Vec::new();
        match event {
            EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                self.take(Kind::Data, p, &mut conns);
                if event == EventType::NodeDeleted {
                    self.take(Kind::Child, p, &mut conns);
                }
                self.peek(Kind::Persistent, p, &mut conns);
                if !self.tables[idx(Kind::Recursive)].is_empty() {
                    let mut at = Some(p);
                    while let Some(cur) = at {
                        self.peek(Kind::Recursive, cur, &mut conns);
                        at = path::split(cur).map(|(parent, _)| parent);
                    }
                }
            }
            EventType::NodeChildrenChanged => {
                self.take(Kind::Child, p, &mut conns);
                self.peek(Kind::Persistent, p, &mut conns);
            }
            _ => {}
        }
        conns.sort_unstable();
        conns.dedup();
        conns
    }

    pub fn remove_conn(&mut self, conn: ConnId) {
        if let Some(watches) = self.by_conn.remove(&conn) {
            for (kind, p) in watches {
                let table = &mut self.tables[idx(kind)];
                if let Some(s) = table.get_mut(&p) {
                    s.remove(&conn);
                    if s.is_empty() {
                        table.remove(&p);
                    }
                }
            }
        }
    }

    /// Total watches, as `zk_watch_count` reports.
    pub fn count(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.values().map(|s| s.len()).sum::<usize>())
            .sum()
    }

    // The `wch*` words report the reference's data-watch table only, which
    // holds one-shot data watches and both kinds of persistent watch (not
    // one-shot child watches); `zk_watch_count` counts everything.

    /// Distinct paths with data-table watches (`wchs`).
    pub fn data_paths(&self) -> usize {
        let mut all: HashSet<&String> = HashSet::new();
        for k in [Kind::Data, Kind::Persistent, Kind::Recursive] {
            all.extend(self.tables[idx(k)].keys());
        }
        all.len()
    }

    /// Watches in the data table (`wchs` "Total watches").
    pub fn data_count(&self) -> usize {
        [Kind::Data, Kind::Persistent, Kind::Recursive]
            .iter()
            .map(|k| {
                self.tables[idx(*k)]
                    .values()
                    .map(|s| s.len())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Data-table paths each connection watches (for `wchc`), sorted.
    pub fn by_connection(&self) -> Vec<(ConnId, Vec<String>)> {
        let mut v: Vec<(ConnId, Vec<String>)> = self
            .by_conn
            .iter()
            .map(|(c, w)| {
                let mut ps: Vec<String> = w
                    .iter()
                    .filter(|(k, _)| *k != Kind::Child)
                    .map(|(_, p)| p.clone())
                    .collect();
                ps.sort();
                ps.dedup();
                (*c, ps)
            })
            .filter(|(_, ps)| !ps.is_empty())
            .collect();
        v.sort();
        v
    }

    /// Connections watching each data-table path (for `wchp`), sorted.
    pub fn by_path(&self) -> Vec<(String, Vec<ConnId>)> {
        let mut m: HashMap<&String, HashSet<ConnId>> = HashMap::new();
        for k in [Kind::Data, Kind::Persistent, Kind::Recursive] {
            for (p, s) in &self.tables[idx(k)] {
                m.entry(p).or_default().extend(s.iter().copied());
            }
        }
        let mut v: Vec<(String, Vec<ConnId>)> = m
            .into_iter()
            .map(|(p, s)| {
                let mut c: Vec<ConnId> = s.into_iter().collect();
                c.sort();
                (p.clone(), c)
            })
            .collect();
        v.sort();
        v
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

    #[test]
    fn persistent_and_recursive() {
        let mut w = WatchTable::default();
        w.add(Kind::Persistent, "/a", 1);
        w.add(Kind::Recursive, "/a", 2);
        w.add(Kind::Data, "/a/b", 2);
        for _ in 0..2 {
            assert_eq!(w.trigger(EventType::NodeChildrenChanged, "/a"), vec![1]);
            assert_eq!(w.trigger(EventType::NodeDataChanged, "/a"), vec![1, 2]);
            assert_eq!(w.trigger(EventType::NodeCreated, "/a/b/c"), vec![2]);
        }
        // Recursive and one-shot on the same connection: one event.
        assert_eq!(w.trigger(EventType::NodeDataChanged, "/a/b"), vec![2]);
        assert!(!w.has(Kind::Data, "/a/b", 2));
        assert!(w.remove(Kind::Recursive, "/a", 2));
        assert!(w.trigger(EventType::NodeCreated, "/a/x").is_empty());
        assert_eq!(w.count(), 1);
    }
}
