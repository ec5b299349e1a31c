//! Quotas, as the reference keeps them under `/zookeeper/quota`: a limits
//! node `/zookeeper/quota<path>/zookeeper_limits` sets count and byte limits
//! for the subtree at `<path>`, and the server keeps
//! `/zookeeper/quota<path>/zookeeper_stats` up to date as nodes below
//! `<path>` are created, changed and deleted. Both hold `StatsTrack` text:
//! `count=N,bytes=M` then any other `key=value` pairs (`countHardLimit`,
//! `byteHardLimit`) in key order.
//!
//! Only the deepest quota above a node counts, as in the reference. Soft
//! limits (`count`, `bytes`) are logged when exceeded; hard limits
//! (`countHardLimit`, `byteHardLimit`) refuse the write with QuotaExceeded
//! when enforcement is on.

use zk_proto::ErrorCode;

use crate::path;
use crate::tree::DataTree;

pub const QUOTA_ROOT: &str = "/zookeeper/quota";
pub const LIMIT_NODE: &str = "zookeeper_limits";
pub const STAT_NODE: &str = "zookeeper_stats";

/// The reference's `StatsTrack`: `key=value` pairs, count and bytes first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsTrack {
    pairs: Vec<(String, i64)>,
}

impl StatsTrack {
    /// Parses `key=value` pairs separated by `,` or `;` (an empty value is
    /// -1, text after a second `=` is ignored); `None` if a pair is not that
    /// shape. Empty text reads as no limits.
    pub fn parse(data: &[u8]) -> Option<StatsTrack> {
        let text = std::str::from_utf8(data).ok()?.trim();
        let mut t = StatsTrack::default();
        for part in text.split([',', ';']).filter(|p| !p.is_empty()) {
            let mut kv = part.split('=');
            let k = kv.next()?;
            let v = kv.next()?;
            let v: i64 = if v.is_empty() {
                -1
            } else {
                v.trim().parse().ok()?
            };
            t.set(k.trim(), v);
        }
        Some(t)
    }

    /// A value, or -1 (the reference's "not set").
    pub fn get(&self, key: &str) -> i64 {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or(-1)
    }

    pub fn set(&mut self, key: &str, v: i64) {
        match self.pairs.iter_mut().find(|(k, _)| k == key) {
            Some(p) => p.1 = v,
            None => self.pairs.push((key.to_owned(), v)),
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut s = format!("count={},bytes={}", self.get("count"), self.get("bytes"));
        let mut rest: Vec<&(String, i64)> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "count" && k != "bytes")
            .collect();
        if !rest.is_empty() {
            s.push('=');
        }
        rest.sort();
        for (k, v) in rest {
            s.push_str(&format!(";{k}={v}"));
        }
        s.into_bytes()
    }
}

/// For `/zookeeper/quota/a/b/<node>`, the quota'd path `/a/b` (if the last
/// component is `node`).
pub fn quota_target<'a>(p: &'a str, node: &str) -> Option<&'a str> {
    let rest = p.strip_prefix(QUOTA_ROOT)?;
    let target = rest.strip_suffix(node)?.strip_suffix('/')?;
    if target.is_empty() || !target.starts_with('/') {
        return None;
    }
    Some(target)
}

fn stat_path(target: &str) -> String {
    format!("{QUOTA_ROOT}{target}/{STAT_NODE}")
}

fn limit_path(target: &str) -> String {
    format!("{QUOTA_ROOT}{target}/{LIMIT_NODE}")
}

impl DataTree {
    /// The deepest quota'd path at or above `p` (never `/`).
    pub fn max_quota_prefix(&self, p: &str) -> Option<String> {
        if self.quotas.is_empty() {
            return None;
        }
        let mut at = Some(p);
        while let Some(cur) = at {
            if cur != "/" && self.quotas.contains(cur) {
                return Some(cur.to_owned());
            }
            at = path::split(cur).map(|(parent, _)| parent);
        }
        None
    }

    /// Keeps the set of quota'd paths in step with the limits node at `p`
    /// (after a create, a delete, a rollback or a load).
    pub(crate) fn reindex_quota(&mut self, p: &str) {
        if let Some(target) = quota_target(p, LIMIT_NODE) {
            if self.get(p).is_some() {
                self.quotas.insert(target.to_owned());
            } else {
                self.quotas.remove(target);
            }
        }
    }

    pub(crate) fn quota_after_create(&mut self, p: &str, bytes: usize) {
        self.reindex_quota(p);
        if let Some(target) = quota_target(p, STAT_NODE) {
            let target = target.to_owned();
            self.recompute_quota(&target);
        }
        if let Some(prefix) = self.max_quota_prefix(p) {
            self.update_quota_stat(&prefix, bytes as i64, 1);
        }
    }

    pub(crate) fn quota_after_delete(&mut self, p: &str, bytes: usize) {
        self.reindex_quota(p);
        if let Some(prefix) = self.max_quota_prefix(p) {
            self.update_quota_stat(&prefix, -(bytes as i64), -1);
        }
    }

    pub(crate) fn quota_after_set(&mut self, p: &str, old: usize, new: usize) {
        if let Some(prefix) = self.max_quota_prefix(p) {
            self.update_quota_stat(&prefix, new as i64 - old as i64, 0);
        }
    }

    /// Rewrites the stats node's data in place: like the reference, this is
    /// not a change of the stats node (no version, no mzxid, no event).
    fn update_quota_stat(&mut self, target: &str, bytes_diff: i64, count_diff: i64) {
        let sp = stat_path(target);
        let Some(node) = self.get(&sp) else {
            log::warn!("missing quota stat node {sp}");
            return;
        };
        let mut stats = StatsTrack::parse(&node.data).unwrap_or_default();
        stats.set("count", stats.get("count") + count_diff);
        stats.set("bytes", stats.get("bytes") + bytes_diff);
        let (count, bytes) = (stats.get("count"), stats.get("bytes"));
        self.replace_data_in_place(&sp, stats.render());
        if let Some(limits) = self
            .get(&limit_path(target))
            .and_then(|n| StatsTrack::parse(&n.data))
        {
            let (cl, bl) = (limits.get("count"), limits.get("bytes"));
            if (cl > -1 && count > cl) || (bl > -1 && bytes > bl) {
                log::warn!(
                    "Quota exceeded: {target} count={count} limit={cl} bytes={bytes} limit={bl}"
                );
            }
        }
    }

    fn recompute_quota(&mut self, target: &str) {
        let (mut count, mut bytes) = (0i64, 0i64);
        let mut stack = vec![target.to_owned()];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.get(&p) {
                count += 1;
                bytes += n.data.len() as i64;
                stack.extend(self.children(&p).map(|c| path::join(&p, c)));
            }
        }
        let sp = stat_path(target);
        let mut stats = self
            .get(&sp)
            .and_then(|n| StatsTrack::parse(&n.data))
            .unwrap_or_default();
        stats.set("count", count);
        stats.set("bytes", bytes);
        self.replace_data_in_place(&sp, stats.render());
    }
}

/// `ZooKeeperServer.checkQuota`: refuses a write that would take the deepest
/// quota above `p` past a hard limit.
pub fn check(tree: &DataTree, p: &str, bytes_diff: i64, count_diff: i64) -> Result<(), ErrorCode> {
    let Some(target) = tree.max_quota_prefix(p) else {
        return Ok(());
    };
    let Some(limits) = tree
        .get(&limit_path(&target))
        .and_then(|n| StatsTrack::parse(&n.data))
    else {
        return Ok(());
    };
    let current = tree
        .get(&stat_path(&target))
        .and_then(|n| StatsTrack::parse(&n.data))
        .unwrap_or_default();
    // Soft limits never refuse; a hard limit refuses what would pass it.
    let over = |diff: i64, cur: i64, hard: i64| diff != 0 && hard > -1 && cur + diff > hard;
    if over(
        count_diff,
        current.get("count"),
        limits.get("countHardLimit"),
    ) || over(
        bytes_diff,
        current.get("bytes"),
        limits.get("byteHardLimit"),
    ) {
        return Err(ErrorCode::QUOTA_EXCEEDED);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_track_round_trips_in_the_reference_order() {
        let t = StatsTrack::parse(b"count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=5").unwrap();
        assert_eq!(
            t.render(),
            b"count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=5"
        );
        assert_eq!(t.get("countHardLimit"), 5);
        assert_eq!(
            StatsTrack::parse(b"count=3,bytes=").unwrap().get("bytes"),
            -1
        );
        assert_eq!(t.get("byteHardLimit"), -1);
        assert!(StatsTrack::parse(b"count=x").is_none());
        assert_eq!(
            quota_target("/zookeeper/quota/a/b/zookeeper_limits", LIMIT_NODE),
            Some("/a/b")
        );
        assert_eq!(
            quota_target("/zookeeper/quota/zookeeper_limits", LIMIT_NODE),
            None
        );
    }
}
