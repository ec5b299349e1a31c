//! Big node data stays in the log that made it durable; the checkpoint's
//! record of such a node refers to it there (the idea of WiscKey: keys in
//! the LSM tree, values in a log).
//!
//! Why: every byte of a 10 KiB setData was written to the log, then again
//! into RocksDB's memtable, flushed to a blob file (LZ4 over incompressible
//! bytes) and, once overwritten, collected. On a 3-member ensemble under
//! multi10 of 10 KiB setData over 16,000 nodes, 16x32, the machine was
//! CPU-bound (0.6% idle) and those copies were a third of its samples. With
//! references that row ran 1.6k-2.1k ops/s against 0.9k-1.6k without (fresh
//! ensembles, 8 s runs, alternated), writing 0.3 MB to the disk per op
//! against 0.6.
//!
//! They pay only for data that dies (is overwritten or deleted) before its
//! log file is due to go: data that lives on is moved into the checkpoint
//! in the end, read back from the log, which is more work than writing it
//! at once (16x32 10 KiB creates: 7.4k/9.5k ops/s with references, 11.7k
//! without). So the store makes them only while most big data rewrites
//! nodes written lately (`Store::stage`).
//!
//! A reference is made only to a txn of the group being staged (logged
//! after anything the log may have freed), and only for data the txn itself
//! wrote there (the node's mzxid is the txn's zxid). It carries the data's
//! length and CRC-32C, checked whenever it is resolved: a reference that
//! does not match is refused as damage, never served.
//!
//! The store keeps every reference of the checkpoint in memory too
//! (`Refs`, rebuilt by each load: RocksDB's vector memtable sorts itself
//! for every read, so it is not read while serving). It frees a log file
//! only once no reference pointed into it when a completed flush was asked
//! for (rule 2 of `storage`); once a log holds more files than it may, the
//! data still referred to in the files beyond is moved back into the
//! records (`Store::move_piece`), and an idle store moves what is referred
//! to in every closed file (`Store::idle_move`). A snapshot a learner
//! installs replaces them all.

use std::collections::{BTreeSet, HashMap};

use zkd_core::record::NodeRecord;
use zkd_core::server::Proposal;
use zkd_core::tree::Node;
use zkd_core::txn::Txn;

/// Data from this many bytes on is left in the log (RocksDB's blob files
/// take records from 4 KiB on: below that the copy costs little).
pub const REF_MIN: usize = 4096;

/// First byte of a reference. A node record starts with its czxid, which
/// is never negative, so never with 0xFF.
const MARK: u8 = 0xFF;

/// mark, log, zxid, length, CRC-32C.
const REF_HEADER: usize = 1 + 1 + 8 + 4 + 4;

/// Which log holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Log {
    /// The standalone server's txn entries.
    Txn = 0,
    /// ZAB's proposals.
    Zab = 1,
}

impl Log {
    fn from_byte(b: u8) -> Option<Log> {
        match b {
            0 => Some(Log::Txn),
            1 => Some(Log::Zab),
            _ => None,
        }
    }
}

/// A record whose data is in a log.
#[derive(Debug)]
pub struct Ref<'a> {
    pub log: Log,
    pub zxid: u64,
    len: u32,
    crc: u32,
    /// The node record up to its data's length prefix (stat and ACL).
    head: &'a [u8],
}

pub fn is_ref(value: &[u8]) -> bool {
    value.first() == Some(&MARK)
}

/// `record` (`Node::record`) with its data replaced by a reference into
/// `log`, when the data is big and was written by a txn for which
/// `logged(mzxid)` holds; `None` otherwise.
pub fn make(record: &NodeRecord, log: Log, logged: impl Fn(u64) -> bool) -> Option<Vec<u8>> {
    if record.len() < REF_MIN {
        return None;
    }
    let (mzxid, head, data, crc) = match record {
        NodeRecord::Whole(r) => {
            let (mzxid, head) = Node::record_head(r)?;
            (mzxid, &r[..head], &r[head + 4..], None)
        }
        NodeRecord::Split { head, data, crc } => {
            (Node::record_mzxid(head)?, &head[..], &data[..], Some(*crc))
        }
    };
    if data.len() < REF_MIN || mzxid <= 0 || !logged(mzxid as u64) {
        return None;
    }
    let crc = crc.unwrap_or_else(|| crc32c::crc32c(data));
    let mut out = Vec::with_capacity(REF_HEADER + head.len());
    out.push(MARK);
    out.push(log as u8);
    out.extend_from_slice(&(mzxid as u64).to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(head);
    Some(out)
}

/// The reference in `value`: `None` when it is a plain record, an error
/// when it is a damaged reference.
pub fn parse(value: &[u8]) -> Option<Result<Ref<'_>, String>> {
    if !is_ref(value) {
        return None;
    }
    let r = (|| {
        if value.len() < REF_HEADER {
            return None;
        }
        Some(Ref {
            log: Log::from_byte(value[1])?,
            zxid: u64::from_be_bytes(value[2..10].try_into().ok()?),
            len: u32::from_be_bytes(value[10..14].try_into().ok()?),
            crc: u32::from_be_bytes(value[14..18].try_into().ok()?),
            head: &value[REF_HEADER..],
        })
    })();
    Some(r.ok_or_else(|| "a damaged data reference".to_owned()))
}

/// The checkpoint's references, by node key and by log and zxid.
#[derive(Default)]
pub struct Refs {
    /// Node key -> its record (a reference).
    by_key: HashMap<Vec<u8>, Vec<u8>>,
    by_zxid: BTreeSet<(Log, u64, Vec<u8>)>,
}

impl Refs {
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_zxid.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Node `key`'s record is now `value` (`None`: deleted).
    pub fn note(&mut self, key: &[u8], value: Option<&[u8]>) {
        let new = value.and_then(|v| parse(v)?.ok().map(|r| (r.log, r.zxid, v)));
        let old = match new {
            Some((log, zxid, v)) => {
                self.by_zxid.insert((log, zxid, key.to_vec()));
                self.by_key.insert(key.to_vec(), v.to_vec())
            }
            None if self.by_key.is_empty() => None,
            None => self.by_key.remove(key),
        };
        if let Some(Ok(r)) = old.as_deref().and_then(parse) {
            if new.is_none_or(|(log, zxid, _)| (log, zxid) != (r.log, r.zxid)) {
                self.by_zxid.remove(&(r.log, r.zxid, key.to_vec()));
            }
        }
    }

    /// Node `key`'s record, if it is a reference.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.by_key.get(key).map(|v| &v[..])
    }

    /// The zxid of `log` below which no record refers into it.
    pub fn held_below(&self, log: Log) -> u64 {
        self.by_zxid
            .range((log, 0, Vec::new())..)
            .next()
            .filter(|(l, _, _)| *l == log)
            .map_or(u64::MAX, |(_, z, _)| z - 1)
    }

    /// The nodes whose records refer into `log` at or below `zxid`, and
    /// the zxids, in zxid order.
    pub fn through(&self, log: Log, zxid: u64) -> Vec<(Vec<u8>, u64)> {
        self.by_zxid
            .range((log, 0, Vec::new())..)
            .take_while(|(l, z, _)| *l == log && *z <= zxid)
            .map(|(_, z, k)| (k.clone(), *z))
            .collect()
    }
}

/// The txn in a log record of `log`.
pub fn decode(log: Log, record: &[u8]) -> Result<Txn, String> {
    match log {
        Log::Txn => Txn::decode_entry(record)
            .map(|(_, t)| t)
            .map_err(|e| format!("{e:?}")),
        Log::Zab => Proposal::decode(record)
            .map(|p| p.txn)
            .map_err(|e| format!("{e:?}")),
    }
}

/// The node record `r` stands for, its data taken from `txn` (the txn at
/// `r.zxid`) for node `path`; checked against the reference's length and
/// checksum.
pub fn resolve(r: &Ref<'_>, path: &str, txn: &Txn) -> Result<Vec<u8>, String> {
    let data = txn
        .data_for(path)
        .ok_or_else(|| format!("txn 0x{:x} writes no data to {path}", r.zxid))?;
    if data.len() != r.len as usize || crc32c::crc32c(data) != r.crc {
        return Err(format!(
            "the data txn 0x{:x} wrote to {path} does not match its reference",
            r.zxid
        ));
    }
    let mut out = Vec::with_capacity(r.head.len() + 4 + data.len());
    out.extend_from_slice(r.head);
    zkd_core::record::push_data(&mut out, data);
    Ok(out)
}

/// Resolves references, decoding each log record once (a multi writes
/// several nodes).
#[derive(Default)]
pub struct Resolver(HashMap<(Log, u64), Txn>);

impl Resolver {
    /// The node record `r` (of node `path`) stands for; `record` is the log
    /// record at `r.zxid`.
    pub fn resolve(&mut self, r: &Ref<'_>, path: &str, record: &[u8]) -> Result<Vec<u8>, String> {
        let txn = match self.0.entry((r.log, r.zxid)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                decode(r.log, record)
                    .map_err(|e| format!("damaged log record 0x{:x}: {e}", r.zxid))?,
            ),
        };
        resolve(r, path, txn).map_err(|e| format!("node {path}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use zk_proto::records::Acl;
    use zkd_core::tree::NodeStat;
    use zkd_core::txn::TxnHeader;

    fn node(data: Vec<u8>, mzxid: i64) -> Node {
        let stat = NodeStat {
            czxid: 3,
            mzxid,
            ..Default::default()
        };
        Node::new(data, Arc::new(vec![Acl::new(31, "world", "anyone")]), stat)
    }

    fn record(data: Vec<u8>, mzxid: i64) -> Vec<u8> {
        node(data, mzxid).encode()
    }

    #[test]
    fn a_big_record_round_trips_through_its_reference() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let rec = record(data.clone(), 9);
        let whole = NodeRecord::Whole(rec.clone());
        let small = node(vec![1; REF_MIN - 1], 9).record();
        assert!(make(&small, Log::Txn, |_| true).is_none());
        assert!(make(&whole, Log::Txn, |z| z != 9).is_none());
        let r = make(&whole, Log::Zab, |z| z == 9).unwrap();
        assert!(r.len() < 128, "{}", r.len());
        // The same reference from a record that shares the tree's data.
        let split = node(data.clone(), 9).record();
        assert!(matches!(split, NodeRecord::Split { .. }));
        assert_eq!(make(&split, Log::Zab, |z| z == 9), Some(r.clone()));
        let parsed = parse(&r).unwrap().unwrap();
        assert_eq!((parsed.log, parsed.zxid), (Log::Zab, 9));
        let txn = Txn::Multi(vec![
            Txn::SetData {
                path: "/a".into(),
                data: vec![0; 10_000].into(),
                version: -1,
            },
            Txn::SetData {
                path: "/a".into(),
                data: data.clone().into(),
                version: -1,
            },
        ]);
        assert_eq!(resolve(&parsed, "/a", &txn).unwrap(), rec);
        // Another node's data, or other bytes of the same length, are
        // refused.
        assert!(resolve(&parsed, "/b", &txn).is_err());
        let mut other = data.clone();
        other[5000] ^= 1;
        let txn = Txn::SetData {
            path: "/a".into(),
            data: other.into(),
            version: -1,
        };
        assert!(resolve(&parsed, "/a", &txn).is_err());
        assert!(parse(&rec).is_none());
        assert!(parse(&r[..10]).unwrap().is_err());
    }

    #[test]
    fn the_txn_comes_out_of_either_log() {
        let hdr = TxnHeader {
            session: 1,
            cxid: 2,
            zxid: 5,
            time: 6,
        };
        let txn = Txn::Create {
            path: "/c".into(),
            data: vec![4; 5000].into(),
            acl: vec![],
            ephemeral_owner: 0,
            parent_cversion: 1,
        };
        let entry = Txn::encode_entry(&hdr, &txn);
        assert_eq!(decode(Log::Txn, &entry).unwrap(), txn);
        let p = Proposal {
            hdr,
            txn: txn.clone(),
            origin: 1,
            err: 0,
            reply: None,
            digest: None,
        };
        assert_eq!(decode(Log::Zab, &p.encode()).unwrap(), txn);
    }

    #[test]
    fn refs_follow_each_nodes_last_record() {
        let data = vec![3u8; 5000];
        let (a, b) = (node(data.clone(), 7).record(), node(data, 9).record());
        let ra = make(&a, Log::Txn, |_| true).unwrap();
        let rb = make(&b, Log::Txn, |_| true).unwrap();
        let rz = make(&b, Log::Zab, |_| true).unwrap();
        let mut refs = Refs::default();
        refs.note(b"k1", Some(&ra));
        refs.note(b"k2", Some(&rb));
        refs.note(b"k3", Some(&rz));
        assert_eq!(refs.held_below(Log::Txn), 6);
        assert_eq!(refs.held_below(Log::Zab), 8);
        assert_eq!(refs.through(Log::Txn, 8), vec![(b"k1".to_vec(), 7)]);
        // Rewritten (a new reference, then inline data), then deleted.
        refs.note(b"k1", Some(&rb));
        assert_eq!(refs.held_below(Log::Txn), 8);
        assert_eq!(refs.through(Log::Txn, 9).len(), 2);
        refs.note(b"k1", Some(&b.clone().into_vec()));
        refs.note(b"k2", None);
        assert_eq!(refs.held_below(Log::Txn), u64::MAX);
        assert!(refs.through(Log::Txn, u64::MAX).is_empty());
        assert_eq!((refs.len(), refs.get(b"k3")), (1, Some(&rz[..])));
    }
}
