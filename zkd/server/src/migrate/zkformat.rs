//! Apache ZooKeeper's on-disk formats (dataDir/version-2): snapshots and
//! transaction logs, read and (snapshots) written. Pure functions over bytes.
//!
//! Snapshot: FileHeader{magic "ZKSN", version 2, dbid}, the sessions (count,
//! then id and timeout each), the ACL cache (count, then id and ACL vector
//! each), the nodes (path, then DataNode{data, acl id, StatPersisted}) in
//! pre-order with the root under "" and "/" as the end mark, then optional
//! digest and an Adler-32 checksum. The snapshot's zxid is in its file name.
//!
//! Transaction log: FileHeader{magic "ZKLG", version 2, dbid}, then entries
//! {Adler-32 of the entry, entry bytes as a buffer, 'B'}; the preallocated
//! tail is zeros. An entry is a TxnHeader{session, cxid, zxid, time, type}
//! and the txn record for the type, optionally followed by a digest.

use std::collections::BTreeMap;

use zk_proto::jute::{Reader, Writer};
use zk_proto::records::{Acl, Record};
use zkd_core::tree::{ttl_owner, NodeStat};
use zkd_core::txn::Txn;

const SNAP_MAGIC: i32 = 0x5a4b_534e; // "ZKSN"
const LOG_MAGIC: i32 = 0x5a4b_4c47; // "ZKLG"

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapNode {
    pub path: String,
    pub data: Vec<u8>,
    pub acl: Vec<Acl>,
    pub stat: NodeStat,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub sessions: Vec<(i64, i32)>,
    /// In pre-order: every parent before its children.
    pub nodes: Vec<SnapNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub session: i64,
    pub cxid: i32,
    pub zxid: i64,
    pub time: i64,
    /// ZooKeeper's txn as zkd's own (the same operations; owners resolved).
    pub txn: Txn,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn read_acl_vec(r: &mut Reader) -> Result<Vec<Acl>, String> {
    r.vec(12, Acl::read).map_err(|e| err("ACL", e))
}

fn read_stat(r: &mut Reader) -> Result<NodeStat, String> {
    let e = |x| err("StatPersisted", x);
    Ok(NodeStat {
        czxid: r.i64().map_err(e)?,
        mzxid: r.i64().map_err(e)?,
        ctime: r.i64().map_err(e)?,
        mtime: r.i64().map_err(e)?,
        version: r.i32().map_err(e)?,
        cversion: r.i32().map_err(e)?,
        aversion: r.i32().map_err(e)?,
        ephemeral_owner: r.i64().map_err(e)?,
        pzxid: r.i64().map_err(e)?,
    })
}

pub fn read_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let mut r = Reader::new(bytes);
    let e = |x| err("snapshot header", x);
    if r.i32().map_err(e)? != SNAP_MAGIC {
        return Err("not a ZooKeeper snapshot (bad magic)".into());
    }
    let version = r.i32().map_err(e)?;
    if version != 2 {
        return Err(format!(
            "snapshot version {version} is not supported (only 2)"
        ));
    }
    let _dbid = r.i64().map_err(e)?;
    let n = r.i32().map_err(|x| err("session count", x))?;
    if n < 0 || n as usize > r.remaining() / 12 {
        return Err(format!("bad session count {n}"));
    }
    let mut sessions = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let id = r.i64().map_err(|x| err("session", x))?;
        let to = r.i32().map_err(|x| err("session", x))?;
        sessions.push((id, to));
    }
    let n = r.i32().map_err(|x| err("ACL cache size", x))?;
    if n < 0 || n as usize > r.remaining() / 12 {
        return Err(format!("bad ACL cache size {n}"));
    }
    let mut acls: BTreeMap<i64, Vec<Acl>> = BTreeMap::new();
    for _ in 0..n {
        let id = r.i64().map_err(|x| err("ACL cache", x))?;
        acls.insert(id, read_acl_vec(&mut r)?);
    }
    let mut nodes = Vec::new();
    loop {
        let path = r.ustring().map_err(|x| err("node path", x))?;
        if path == "/" {
            break;
        }
        let data = r.buffer().map_err(|x| err(&path, x))?;
        let acl_id = r.i64().map_err(|x| err(&path, x))?;
        let stat = read_stat(&mut r)?;
        // -1 is the reference's "open ACL" id that is never cached.
        let acl = match acls.get(&acl_id) {
            Some(a) => a.clone(),
            None if acl_id == -1 => Acl::open_unsafe(),
            None => {
                return Err(format!(
                    "{path}: ACL id {acl_id} is not in the snapshot's ACL cache"
                ))
            }
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        nodes.push(SnapNode {
            path,
            data,
            acl,
            stat,
        });
    }
    Ok(Snapshot { sessions, nodes })
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// A snapshot in ZooKeeper's format (no digest), checksummed as ZooKeeper
/// checks it. `nodes` must be in pre-order with "/" first.
pub fn write_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(SNAP_MAGIC).i32(2).i64(0);
    w.i32(s.sessions.len() as i32);
    for (id, to) in &s.sessions {
        w.i64(*id).i32(*to);
    }
    // The ACL cache: each distinct ACL once, numbered in first-use order.
    let mut ids: std::collections::HashMap<&Vec<Acl>, i64> = std::collections::HashMap::new();
    let mut order: Vec<&Vec<Acl>> = Vec::new();
    for n in &s.nodes {
        if !ids.contains_key(&n.acl) {
            ids.insert(&n.acl, order.len() as i64 + 1);
            order.push(&n.acl);
        }
    }
    w.i32(order.len() as i32);
    for (i, acl) in order.iter().enumerate() {
        w.i64(i as i64 + 1).i32(acl.len() as i32);
        for a in acl.iter() {
            a.write(&mut w);
        }
    }
    for n in &s.nodes {
        w.ustring(if n.path == "/" { "" } else { &n.path });
        w.buffer(&n.data).i64(ids[&n.acl]);
        let st = &n.stat;
        w.i64(st.czxid).i64(st.mzxid).i64(st.ctime).i64(st.mtime);
        w.i32(st.version).i32(st.cversion).i32(st.aversion);
        w.i64(st.ephemeral_owner).i64(st.pzxid);
    }
    w.ustring("/");
    let sum = adler32(&w.buf) as i64;
    w.i64(sum).ustring("/");
    w.buf
}

fn read_create(r: &mut Reader, op: i32, session: i64) -> Result<Txn, String> {
    let e = |x| err("create txn", x);
    let path = r.ustring().map_err(e)?;
    let data = r.buffer().map_err(e)?;
    let acl = read_acl_vec(r)?;
    let (ephemeral_owner, parent_cversion) = match op {
        1 | 15 => {
            let eph = r.bool().map_err(e)?;
            (if eph { session } else { 0 }, r.i32().map_err(e)?)
        }
        19 => (i64::MIN, r.i32().map_err(e)?),
        21 => {
            let pc = r.i32().map_err(e)?;
            (ttl_owner(r.i64().map_err(e)?), pc)
        }
        _ => unreachable!(),
    };
    Ok(Txn::Create {
        path,
        data: data.into(),
        acl,
        ephemeral_owner,
        parent_cversion,
    })
}

/// One txn record of type `op`, written by `session`.
fn read_txn(r: &mut Reader, op: i32, session: i64) -> Result<Txn, String> {
    let e = |x| err("txn", x);
    Ok(match op {
        -10 => Txn::CreateSession {
            timeout_ms: r.i32().map_err(e)?,
            passwd: session_password(session),
        },
        -11 => Txn::CloseSession,
        1 | 15 | 19 | 21 => read_create(r, op, session)?,
        2 | 20 => Txn::Delete {
            path: r.ustring().map_err(e)?,
        },
        5 | 16 => Txn::SetData {
            path: r.ustring().map_err(e)?,
            data: r.buffer().map_err(e)?.into(),
            version: r.i32().map_err(e)?,
        },
        7 => Txn::SetAcl {
            path: r.ustring().map_err(e)?,
            acl: read_acl_vec(r)?,
            version: r.i32().map_err(e)?,
        },
        13 => Txn::Check {
            path: r.ustring().map_err(e)?,
            version: r.i32().map_err(e)?,
        },
        -1 => Txn::Error(r.i32().map_err(e)?),
        14 => {
            let n = r.i32().map_err(e)?;
            if n < 0 || n as usize > r.remaining() / 8 {
                return Err(format!("bad multi size {n}"));
            }
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t = r.i32().map_err(e)?;
                let body = r.buffer().map_err(e)?;
                v.push(read_txn(&mut Reader::new(&body), t, session)?);
            }
            Txn::Multi(v)
        }
        t => return Err(format!("unsupported txn type {t}")),
    })
}

/// The entries of one log file, and whether its tail was torn (an entry cut
/// short or failing its checksum: the log ends there, as in ZooKeeper).
pub fn read_txn_log(bytes: &[u8]) -> Result<(Vec<LogEntry>, Option<String>), String> {
    let mut r = Reader::new(bytes);
    let e = |x| err("log header", x);
    if r.i32().map_err(e)? != LOG_MAGIC {
        return Err("not a ZooKeeper transaction log (bad magic)".into());
    }
    let version = r.i32().map_err(e)?;
    if version != 2 {
        return Err(format!("log version {version} is not supported (only 2)"));
    }
    let _dbid = r.i64().map_err(e)?;
    let mut out = Vec::new();
    loop {
        if r.remaining() < 12 {
            return Ok((out, None));
        }
        let crc = r.i64().map_err(e)?;
        let Ok(Some(entry)) = r.buffer_opt() else {
            return Ok((
                out,
                Some("entry length runs past the end of the file".into()),
            ));
        };
        if entry.is_empty() {
            return Ok((out, None)); // the preallocated, zeroed tail
        }
        if adler32(entry) as i64 != crc {
            let why = format!("checksum mismatch after {} entries", out.len());
            return Ok((out, Some(why)));
        }
        match r.bool() {
            Ok(_) => {}
            Err(_) => return Ok((out, Some("entry without its end mark".into()))),
        }
        let mut er = Reader::new(entry);
        let he = |x| err("txn header", x);
        let session = er.i64().map_err(he)?;
        let cxid = er.i32().map_err(he)?;
        let zxid = er.i64().map_err(he)?;
        let time = er.i64().map_err(he)?;
        let typ = er.i32().map_err(he)?;
        let txn = read_txn(&mut er, typ, session).map_err(|x| format!("zxid 0x{zxid:x}: {x}"))?;
        out.push(LogEntry {
            session,
            cxid,
            zxid,
            time,
            txn,
        });
    }
}

/// ZooKeeper's session password: 16 bytes from `java.util.Random` seeded
/// with the session id XOR the server's fixed secret
/// (`ZooKeeperServer.generatePasswd`). Computing it the same way lets a
/// client keep its session across the move to zkd.
pub fn session_password(id: i64) -> [u8; 16] {
    const SUPER_SECRET: i64 = 0xB341_5C00;
    const MULT: i64 = 0x5_DEEC_E66D;
    const MASK: i64 = (1 << 48) - 1;
    let mut seed = ((id ^ SUPER_SECRET) ^ MULT) & MASK;
    let mut next_int = || {
        seed = (seed.wrapping_mul(MULT).wrapping_add(0xB)) & MASK;
        (seed >> 16) as i32
    };
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let mut rnd = next_int();
        for _ in 0..4.min(16 - i) {
            out[i] = rnd as u8;
            rnd >>= 8;
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_known_value() {
        // "Wikipedia" -> 0x11E60398, the textbook example.
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn java_random_matches_the_jdk() {
        // new java.util.Random(42).nextInt() == -1170105035 (JDK documented
        // sequence), so its first 4 bytes little-endian are these.
        const MULT: i64 = 0x5_DEEC_E66D;
        let mut seed = (42i64 ^ MULT) & ((1 << 48) - 1);
        seed = (seed.wrapping_mul(MULT).wrapping_add(0xB)) & ((1 << 48) - 1);
        assert_eq!((seed >> 16) as i32, -1170105035);
    }

    #[test]
    fn snapshot_round_trips() {
        let st = NodeStat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 0,
            pzxid: 8,
        };
        let s = Snapshot {
            sessions: vec![(0x100, 4000)],
            nodes: vec![
                SnapNode {
                    path: "/".into(),
                    data: vec![],
                    acl: Acl::open_unsafe(),
                    stat: NodeStat::default(),
                },
                SnapNode {
                    path: "/a".into(),
                    data: b"x".to_vec(),
                    acl: Acl::read_unsafe(),
                    stat: st,
                },
            ],
        };
        assert_eq!(read_snapshot(&write_snapshot(&s)).unwrap(), s);
        assert!(read_snapshot(b"nope").is_err());
        assert!(read_snapshot(&write_snapshot(&s)[..30]).is_err());
    }
}
