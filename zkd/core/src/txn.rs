//! Transactions: what a write request becomes once it has been checked against
//! the tree. A txn is deterministic to apply, so the same log replayed on any
//! replica (or after a restart) yields the same tree. Encoded in jute, tagged
//! with the reference's opcodes.

use bytes::Bytes;
use zk_proto::jute::{DecodeError, Reader, Result, Writer};
use zk_proto::records::{Acl, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxnHeader {
    pub session: i64,
    pub cxid: i32,
    pub zxid: i64,
    pub time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    CreateSession {
        timeout_ms: i32,
        passwd: [u8; 16],
    },
    /// Deletes every ephemeral of the header's session, then forgets it.
    CloseSession,
    Create {
        path: String,
        data: Bytes,
        acl: Vec<Acl>,
        ephemeral_owner: i64,
        parent_cversion: i32,
    },
    Delete {
        path: String,
    },
    SetData {
        path: String,
        data: Bytes,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    /// A version check that passed; changes nothing.
    Check {
        path: String,
        version: i32,
    },
    Multi(Vec<Txn>),
    /// A write that failed preparation: it still takes a zxid, as in the reference.
    Error(i32),
}

impl Txn {
    fn tag(&self) -> i32 {
        match self {
            Txn::CreateSession { .. } => -10,
            Txn::CloseSession => -11,
            Txn::Create { .. } => 1,
            Txn::Delete { .. } => 2,
            Txn::SetData { .. } => 5,
            Txn::SetAcl { .. } => 7,
            Txn::Check { .. } => 13,
            Txn::Multi(_) => 14,
            Txn::Error(_) => -1,
        }
    }

    pub fn write(&self, w: &mut Writer) {
        w.i32(self.tag());
        match self {
            Txn::CreateSession { timeout_ms, passwd } => {
                w.i32(*timeout_ms).buffer(passwd);
            }
            Txn::CloseSession => {}
            Txn::Create {
                path,
                data,
                acl,
                ephemeral_owner,
                parent_cversion,
            } => {
                w.ustring(path).buffer(data);
                w.i32(acl.len() as i32);
                for a in acl {
                    a.write(w);
                }
                w.i64(*ephemeral_owner).i32(*parent_cversion);
            }
            Txn::Delete { path } => {
                w.ustring(path);
            }
            Txn::SetData {
                path,
                data,
                version,
            } => {
                w.ustring(path).buffer(data).i32(*version);
            }
            Txn::SetAcl { path, acl, version } => {
                w.ustring(path);
                w.i32(acl.len() as i32);
                for a in acl {
                    a.write(w);
                }
                w.i32(*version);
            }
            Txn::Check { path, version } => {
                w.ustring(path).i32(*version);
            }
            Txn::Multi(txns) => {
                w.i32(txns.len() as i32);
                for t in txns {
                    t.write(w);
                }
            }
            Txn::Error(e) => {
                w.i32(*e);
            }
        }
    }

    pub fn read(r: &mut Reader) -> Result<Txn> {
        Ok(match r.i32()? {
            -10 => {
                let timeout_ms = r.i32()?;
                let p = r.buffer()?;
                let passwd: [u8; 16] = p
                    .try_into()
                    .map_err(|_| DecodeError::BadValue("session password length", 0))?;
                Txn::CreateSession { timeout_ms, passwd }
            }
            -11 => Txn::CloseSession,
            1 => Txn::Create {
                path: r.ustring()?,
                data: r.buffer()?.into(),
                acl: r.vec(12, Acl::read)?,
                ephemeral_owner: r.i64()?,
                parent_cversion: r.i32()?,
            },
            2 => Txn::Delete { path: r.ustring()? },
            5 => Txn::SetData {
                path: r.ustring()?,
                data: r.buffer()?.into(),
                version: r.i32()?,
            },
            7 => Txn::SetAcl {
                path: r.ustring()?,
                acl: r.vec(12, Acl::read)?,
                version: r.i32()?,
            },
            13 => Txn::Check {
                path: r.ustring()?,
                version: r.i32()?,
            },
            14 => Txn::Multi(r.vec(4, Txn::read)?),
            -1 => Txn::Error(r.i32()?),
            t => return Err(DecodeError::BadValue("txn type", t as i64)),
        })
    }

    /// Header and txn as one log record.
    pub fn encode_entry(hdr: &TxnHeader, txn: &Txn) -> Vec<u8> {
        let mut w = Writer::with_capacity(txn.len_hint());
        Txn::write_entry(hdr, txn, &mut w);
        w.buf
    }

    /// `encode_entry`, appended to `w`.
    pub fn write_entry(hdr: &TxnHeader, txn: &Txn, w: &mut Writer) {
        w.i64(hdr.session).i32(hdr.cxid).i64(hdr.zxid).i64(hdr.time);
        txn.write(w);
    }

    /// The data this txn leaves at `path` if it writes any there: of a
    /// create or setData of it, the last one (a multi may hold several).
    pub fn data_for(&self, path: &str) -> Option<&[u8]> {
        match self {
            Txn::Create { path: p, data, .. } | Txn::SetData { path: p, data, .. } if p == path => {
                Some(data)
            }
            Txn::Multi(ops) => ops.iter().rev().find_map(|t| t.data_for(path)),
            _ => None,
        }
    }

    /// About how many bytes the entry takes (at least that many, give or
    /// take ACL strings), to size buffers once.
    pub fn len_hint(&self) -> usize {
        let acl = |a: &[Acl]| a.len() * 32;
        28 + match self {
            Txn::Create {
                path, data, acl: a, ..
            } => 24 + path.len() + data.len() + acl(a),
            Txn::SetData { path, data, .. } => 16 + path.len() + data.len(),
            Txn::Delete { path } | Txn::Check { path, .. } => 12 + path.len(),
            Txn::SetAcl { path, acl: a, .. } => 16 + path.len() + acl(a),
            Txn::Multi(ops) => 8 + ops.iter().map(|t| 12 + t.len_hint()).sum::<usize>(),
            Txn::CreateSession { .. } => 28,
            Txn::CloseSession | Txn::Error(_) => 8,
        }
    }

    pub fn decode_entry(bytes: &[u8]) -> Result<(TxnHeader, Txn)> {
        let mut r = Reader::new(bytes);
        let hdr = TxnHeader {
            session: r.i64()?,
            cxid: r.i32()?,
            zxid: r.i64()?,
            time: r.i64()?,
        };
        Ok((hdr, Txn::read(&mut r)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let hdr = TxnHeader {
            session: 0x100,
            cxid: 3,
            zxid: 42,
            time: 99,
        };
        let txns = vec![
            Txn::CreateSession {
                timeout_ms: 4000,
                passwd: [7; 16],
            },
            Txn::CloseSession,
            Txn::Multi(vec![
                Txn::Create {
                    path: "/a".into(),
                    data: b"x".to_vec().into(),
                    acl: Acl::open_unsafe(),
                    ephemeral_owner: 5,
                    parent_cversion: 2,
                },
                Txn::SetData {
                    path: "/a".into(),
                    data: Default::default(),
                    version: 1,
                },
                Txn::SetAcl {
                    path: "/a".into(),
                    acl: Acl::read_unsafe(),
                    version: 1,
                },
                Txn::Check {
                    path: "/a".into(),
                    version: 1,
                },
                Txn::Delete { path: "/a".into() },
            ]),
            Txn::Error(-101),
        ];
        for t in txns {
            let e = Txn::encode_entry(&hdr, &t);
            assert_eq!(Txn::decode_entry(&e).unwrap(), (hdr, t));
        }
    }
}
