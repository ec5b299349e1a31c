//! Applying a committed txn to a tree without preparing it: what a replica
//! does with txns another server prepared (ZAB followers, observers, a new
//! leader replaying its log) and what `zkd import` does with ZooKeeper's
//! log. Preparation already checked every precondition on the leader, so a
//! txn that does not fit the tree here means the replica diverged (or, for
//! an import, that a fuzzy snapshot already holds it): `apply_tree` says so
//! and leaves the tree as it was for that op.
//!
//! Sessions are the caller's: `CreateSession` changes nothing in the tree,
//! `CloseSession` removes the session's ephemerals here.

use crate::tree::DataTree;
use crate::txn::{Txn, TxnHeader};

/// Applies `txn` (stamped by `hdr`) to `tree`; false when an op did not fit.
pub fn apply_tree(tree: &mut DataTree, hdr: &TxnHeader, txn: &Txn) -> bool {
    match txn {
        Txn::CreateSession { .. } | Txn::Check { .. } | Txn::Error(_) => true,
        Txn::CloseSession => {
            for p in tree.ephemerals_of(hdr.session) {
                if tree.get(&p).is_some_and(|n| n.child_count == 0) {
                    tree.delete(&p, hdr.zxid);
                }
            }
            true
        }
        Txn::Create {
            path,
            data,
            acl,
            ephemeral_owner,
            parent_cversion,
        } => {
            let Some((parent, _)) = crate::path::split(path) else {
                return false;
            };
            if tree.get(path).is_some() {
                return false;
            }
            let Some(pc) = tree.get(parent).map(|p| p.stat.cversion) else {
                return false;
            };
            // ZooKeeper's older logs write -1: one more than the parent's.
            let pc = if *parent_cversion == -1 {
                pc + 1
            } else {
                *parent_cversion
            };
            tree.create(
                path,
                data,
                acl.clone(),
                *ephemeral_owner,
                pc,
                hdr.zxid,
                hdr.time,
            );
            true
        }
        Txn::Delete { path } => {
            if path == "/" || tree.get(path).is_none_or(|n| n.child_count > 0) {
                return false;
            }
            tree.delete(path, hdr.zxid);
            true
        }
        Txn::SetData {
            path,
            data,
            version,
        } => tree
            .set_data(path, data, *version, hdr.zxid, hdr.time)
            .is_some(),
        Txn::SetAcl { path, acl, version } => {
            if tree.get(path).is_none() {
                return false;
            }
            tree.set_acl(path, acl.clone(), *version);
            true
        }
        Txn::Multi(ops) => {
            let mut ok = true;
            for op in ops {
                ok &= apply_tree(tree, hdr, op);
            }
            ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prep::{execute, Rules};
    use zk_proto::records::{Acl, CreateRequest, Record, SetDataRequest};
    use zk_proto::OpCode;

    /// The same requests prepared on one tree and applied on another give
    /// the same tree (the replica property ZAB relies on).
    #[test]
    fn applying_prepared_txns_reproduces_the_tree() {
        let mut leader = DataTree::new();
        let mut replica = DataTree::new();
        let rules = Rules {
            extended_types: true,
            enforce_quota: true,
        };
        let reqs: Vec<(OpCode, Vec<u8>)> = vec![
            (
                OpCode::Create,
                CreateRequest {
                    path: "/a".into(),
                    data: b"1".to_vec(),
                    acl: Acl::open_unsafe(),
                    flags: 0,
                }
                .encode(),
            ),
            (
                OpCode::Create,
                CreateRequest {
                    path: "/a/s-".into(),
                    data: vec![],
                    acl: Acl::open_unsafe(),
                    flags: 2,
                }
                .encode(),
            ),
            (
                OpCode::SetData,
                SetDataRequest {
                    path: "/a".into(),
                    data: b"2".to_vec(),
                    version: 0,
                }
                .encode(),
            ),
            (
                OpCode::Create,
                CreateRequest {
                    path: "/a/e".into(),
                    data: vec![],
                    acl: Acl::open_unsafe(),
                    flags: 1,
                }
                .encode(),
            ),
        ];
        for (i, (op, body)) in reqs.iter().enumerate() {
            let hdr = TxnHeader {
                session: 7,
                cxid: i as i32,
                zxid: i as i64 + 1,
                time: 1000 + i as i64,
            };
            leader.begin();
            let (txn, _) = execute(&mut leader, &hdr, &[], rules, *op, body).unwrap();
            leader.commit();
            replica.begin();
            assert!(apply_tree(&mut replica, &hdr, &txn));
            replica.commit();
        }
        let close = TxnHeader {
            session: 7,
            cxid: 9,
            zxid: 9,
            time: 2000,
        };
        for t in [&mut leader, &mut replica] {
            t.begin();
            assert!(apply_tree(t, &close, &Txn::CloseSession));
            t.commit();
        }
        assert!(replica.get("/a/e").is_none());
        let dump = |t: &DataTree| {
            let mut v: Vec<_> = t
                .iter()
                .map(|(p, n)| (p.to_string(), n.data.to_vec(), n.stat))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(dump(&leader), dump(&replica));
        assert_eq!(leader.digest(), replica.digest());
        assert_eq!(leader.digest(), leader.digest_recomputed());
        assert_ne!(leader.digest(), DataTree::new().digest());
    }

    #[test]
    fn a_txn_that_does_not_fit_is_reported() {
        let mut t = DataTree::new();
        let hdr = TxnHeader {
            zxid: 1,
            ..Default::default()
        };
        assert!(!apply_tree(
            &mut t,
            &hdr,
            &Txn::Delete { path: "/x".into() }
        ));
        assert!(!apply_tree(
            &mut t,
            &hdr,
            &Txn::SetData {
                path: "/x".into(),
                data: Default::default(),
                version: 1
            }
        ));
    }
}
