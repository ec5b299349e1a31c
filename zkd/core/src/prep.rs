//! Request preparation and application for writes: check a request against
//! the tree exactly as the reference's `PrepRequestProcessor` does (same
//! checks, same order, so the same error wins), turn it into a `Txn`, and
//! apply it. A `multi` applies each op before checking the next, so later ops
//! see earlier ones; the caller rolls the tree back if any op fails.

use zk_proto::codes::perms;
use zk_proto::records::*;
use zk_proto::{CreateMode, ErrorCode, OpCode};

use crate::acl;
use crate::path;
use crate::quota;
use crate::tree::{is_special_path, ttl_owner, DataTree, Node, CONTAINER_OWNER, TTL_MAX_MS};
use crate::txn::{Txn, TxnHeader};

/// Server-wide switches that change how writes are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// TTL nodes allowed (`zookeeper.extendedTypesEnabled`).
    pub extended_types: bool,
    /// Hard quota limits refuse writes (`zookeeper.enforceQuota`).
    pub enforce_quota: bool,
}

/// What a successful write returns to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Create(String),
    Create2(String, Stat),
    Stat(Stat),
    None,
    Multi(Vec<MultiResult>),
}

type Res<T> = Result<T, ErrorCode>;

fn decode<T: Record>(body: &[u8]) -> Res<T> {
    T::decode(body).map_err(|_| ErrorCode::MARSHALLING_ERROR)
}

/// Prepares and applies one write request. On `Err` the caller rolls the
/// tree back; `MarshallingError` means the body did not decode.
pub fn execute(
    tree: &mut DataTree,
    hdr: &TxnHeader,
    ids: &[Id],
    rules: Rules,
    op: OpCode,
    body: &[u8],
) -> Res<(Txn, Applied)> {
    match op {
        OpCode::Create | OpCode::Create2 | OpCode::CreateContainer => {
            let req: CreateRequest = decode(body)?;
            let (txn, p, stat) = create(tree, hdr, ids, rules, op, req, 0)?;
            let applied = if op == OpCode::Create {
                Applied::Create(p)
            } else {
                Applied::Create2(p, stat)
            };
            Ok((txn, applied))
        }
        OpCode::CreateTtl => {
            let r: CreateTtlRequest = decode(body)?;
            let req = CreateRequest {
                path: r.path,
                data: r.data,
                acl: r.acl,
                flags: r.flags,
            };
            let (txn, p, stat) = create(tree, hdr, ids, rules, op, req, r.ttl)?;
            Ok((txn, Applied::Create2(p, stat)))
        }
        // Standalone servers cannot reconfigure; the reference answers
        // ReconfigDisabled through the write pipeline (so it takes a zxid).
        OpCode::Reconfig => Err(ErrorCode(-123)),
        OpCode::Delete => {
            let req: DeleteRequest = decode(body)?;
            let txn = delete(tree, hdr, ids, &req)?;
            Ok((txn, Applied::None))
        }
        OpCode::SetData => {
            let req: SetDataRequest = decode(body)?;
            let (txn, stat) = set_data(tree, hdr, ids, rules, req)?;
            Ok((txn, Applied::Stat(stat)))
        }
        OpCode::SetAcl => {
            let req: SetAclRequest = decode(body)?;
            let (txn, stat) = set_acl(tree, ids, &req)?;
            Ok((txn, Applied::Stat(stat)))
        }
        OpCode::Check => {
            let req: CheckVersionRequest = decode(body)?;
            Ok((check(tree, ids, &req)?, Applied::None))
        }
        OpCode::Multi => {
            let req: MultiRequest = decode(body)?;
            multi(tree, hdr, ids, rules, req)
        }
        _ => Err(ErrorCode::UNIMPLEMENTED),
    }
}

/// Limits and stats nodes under /zookeeper/quota must hold StatsTrack text;
/// anything else would poison quota accounting, so it is refused up front
/// (the reference added the same check after 3.8).
fn valid_quota_data(p: &str, data: &[u8]) -> Res<()> {
    let is_quota_node = quota::quota_target(p, quota::LIMIT_NODE).is_some()
        || quota::quota_target(p, quota::STAT_NODE).is_some();
    if is_quota_node && quota::StatsTrack::parse(data).is_none() {
        return Err(ErrorCode::BAD_ARGUMENTS);
    }
    Ok(())
}

fn check_version(current: i32, expected: i32) -> Res<i32> {
    if expected != -1 && expected != current {
        return Err(ErrorCode::BAD_VERSION);
    }
    // Skip -1 on wrap-around: -1 means "any version" to clients (ZOOKEEPER-4743).
    let next = current.wrapping_add(1);
    Ok(if next == -1 { 0 } else { next })
}

/// The node at `p` if `ids` may do `perm` on it (NoNode, then NoAuth).
fn allowed<'t>(tree: &'t DataTree, p: &str, perm: i32, ids: &[Id]) -> Res<&'t Node> {
    let n = tree.get(p).ok_or(ErrorCode::NO_NODE)?;
    if acl::allows(&n.acl, perm, ids) {
        Ok(n)
    } else {
        Err(ErrorCode::NO_AUTH)
    }
}

fn valid_path(p: &str) -> Res<()> {
    path::validate(p).map_err(|_| ErrorCode::BAD_ARGUMENTS)
}

/// The parent of a path given to delete: refuses paths with no slash, with
/// NUL, and the reserved nodes (`getParentPathAndValidate`).
fn parent_for_delete(p: &str) -> Res<&str> {
    if !p.contains('/') || p.contains('\0') || is_special_path(p) {
        return Err(ErrorCode::BAD_ARGUMENTS);
    }
    path::split(p)
        .map(|(parent, _)| parent)
        .ok_or(ErrorCode::BAD_ARGUMENTS)
}

/// Which kind of node a create makes, checked as `validateCreateRequest`
/// does: containers come from the createContainer opcode whatever the flags
/// (and flag 4 on a plain create makes a persistent node, as in the
/// reference); TTL nodes only from createTTL with a TTL flag and a TTL in
/// 1..=2^40-1 ms; `rules` is `zookeeper.extendedTypesEnabled`.
fn owner_for(op: OpCode, mode: CreateMode, ttl: i64, ext: bool, session: i64) -> Res<i64> {
    match op {
        OpCode::CreateTtl => {
            if !mode.is_ttl() {
                return Err(ErrorCode::BAD_ARGUMENTS);
            }
            if !ext {
                return Err(ErrorCode::UNIMPLEMENTED);
            }
            if ttl <= 0 || ttl > TTL_MAX_MS {
                return Err(ErrorCode::BAD_ARGUMENTS);
            }
            Ok(ttl_owner(ttl))
        }
        OpCode::CreateContainer => Ok(CONTAINER_OWNER),
        _ if mode.is_ttl() => Err(if ext {
            ErrorCode::BAD_ARGUMENTS
        } else {
            ErrorCode::UNIMPLEMENTED
        }),
        _ if mode.is_ephemeral() => Ok(session),
        _ => Ok(0),
    }
}

fn create(
    tree: &mut DataTree,
    hdr: &TxnHeader,
    ids: &[Id],
    rules: Rules,
    op: OpCode,
    mut req: CreateRequest,
    ttl: i64,
) -> Res<(Txn, String, Stat)> {
    let mode = CreateMode::from_flags(req.flags).ok_or(ErrorCode::BAD_ARGUMENTS)?;
    let owner = owner_for(op, mode, ttl, rules.extended_types, hdr.session)?;
    let last_slash = req.path.rfind('/').ok_or(ErrorCode::BAD_ARGUMENTS)?;
    if req.path.contains('\0') {
        return Err(ErrorCode::BAD_ARGUMENTS);
    }
    let parent_path = if last_slash == 0 {
        "/"
    } else {
        &req.path[..last_slash]
    };
    if req.path == "/" {
        // The reference looks the root up under "" and finds it.
        return Err(ErrorCode::NODE_EXISTS);
    }
    let acl = acl::fixup(&req.acl, ids).ok_or(ErrorCode::INVALID_ACL)?;
    let parent = tree.get(parent_path).ok_or(ErrorCode::NO_NODE)?;
    if !acl::allows(&parent.acl, perms::CREATE, ids) {
        return Err(ErrorCode::NO_AUTH);
    }
    let parent_cversion = parent.stat.cversion;
    let parent_owner = parent.stat.ephemeral_owner;
    let full = if mode.is_sequential() {
        format!("{}{:010}", req.path, parent_cversion)
    } else {
        req.path.clone()
    };
    valid_path(&full)?;
    if tree.get(&full).is_some() {
        return Err(ErrorCode::NODE_EXISTS);
    }
    if crate::tree::is_session_owner(parent_owner) {
        return Err(ErrorCode::NO_CHILDREN_FOR_EPHEMERALS);
    }
    valid_quota_data(&full, &req.data)?;
    if rules.enforce_quota {
        quota::check(tree, &full, req.data.len() as i64, 1)?;
    }
    let new_cversion = parent_cversion.wrapping_add(1);
    // Big data: one buffer for the txn and the tree (`data`).
    let data = bytes::Bytes::from(std::mem::take(&mut req.data));
    let stat = tree.create(
        &full,
        &data,
        acl.clone(),
        owner,
        new_cversion,
        hdr.zxid,
        hdr.time,
    );
    let txn = Txn::Create {
        path: full.clone(),
        data,
        acl,
        ephemeral_owner: owner,
        parent_cversion: new_cversion,
    };
    Ok((txn, full, stat))
}

fn delete(tree: &mut DataTree, hdr: &TxnHeader, ids: &[Id], req: &DeleteRequest) -> Res<Txn> {
    let parent = parent_for_delete(&req.path)?;
    allowed(tree, parent, perms::DELETE, ids)?;
    let n = tree.get(&req.path).ok_or(ErrorCode::NO_NODE)?;
    check_version(n.stat.version, req.version)?;
    if n.child_count > 0 {
        return Err(ErrorCode::NOT_EMPTY);
    }
    tree.delete(&req.path, hdr.zxid);
    Ok(Txn::Delete {
        path: req.path.clone(),
    })
}

fn set_data(
    tree: &mut DataTree,
    hdr: &TxnHeader,
    ids: &[Id],
    rules: Rules,
    req: SetDataRequest,
) -> Res<(Txn, Stat)> {
    valid_path(&req.path)?;
    if rules.enforce_quota && tree.max_quota_prefix(&req.path).is_some() {
        // The quota check reads other nodes, so it runs first, on a lookup
        // of its own, after the checks that precede it.
        let n = allowed(tree, &req.path, perms::WRITE, ids)?;
        valid_quota_data(&req.path, &req.data)?;
        quota::check(
            tree,
            &req.path,
            req.data.len() as i64 - n.data.len() as i64,
            0,
        )?;
    }
    // NoNode, NoAuth, a bad quota record, then the version, on the one
    // lookup of the node that also changes it.
    // Big data: one buffer for the txn and the tree (`data`).
    let data = bytes::Bytes::from(req.data);
    let stat = tree
        .set_data_checked(&req.path, &data, hdr.zxid, hdr.time, |n| {
            if !acl::allows(&n.acl, perms::WRITE, ids) {
                return Err(ErrorCode::NO_AUTH);
            }
            valid_quota_data(&req.path, &data)?;
            check_version(n.stat.version, req.version)
        })
        .ok_or(ErrorCode::NO_NODE)??;
    let version = stat.version;
    Ok((
        Txn::SetData {
            path: req.path,
            data,
            version,
        },
        stat,
    ))
}

fn set_acl(tree: &mut DataTree, ids: &[Id], req: &SetAclRequest) -> Res<(Txn, Stat)> {
    valid_path(&req.path)?;
    let acl = acl::fixup(&req.acl, ids).ok_or(ErrorCode::INVALID_ACL)?;
    let n = allowed(tree, &req.path, perms::ADMIN, ids)?;
    let version = check_version(n.stat.aversion, req.version)?;
    let stat = tree.set_acl(&req.path, acl.clone(), version);
    Ok((
        Txn::SetAcl {
            path: req.path.clone(),
            acl,
            version,
        },
        stat,
    ))
}

fn check(tree: &DataTree, ids: &[Id], req: &CheckVersionRequest) -> Res<Txn> {
    valid_path(&req.path)?;
    let n = allowed(tree, &req.path, perms::READ, ids)?;
    check_version(n.stat.version, req.version)?;
    Ok(Txn::Check {
        path: req.path.clone(),
        version: req.version,
    })
}

fn multi(
    tree: &mut DataTree,
    hdr: &TxnHeader,
    ids: &[Id],
    rules: Rules,
    req: MultiRequest,
) -> Res<(Txn, Applied)> {
    let ops = req.ops.len();
    let mut txns = Vec::with_capacity(ops);
    let mut results = Vec::with_capacity(ops);
    for (i, op) in req.ops.into_iter().enumerate() {
        let r = match op {
            MultiOp::Create { op, req: c } => {
                let code = match op {
                    1 => OpCode::Create,
                    19 => OpCode::CreateContainer,
                    _ => OpCode::Create2,
                };
                create(tree, hdr, ids, rules, code, c, 0).map(|(t, p, s)| {
                    let r = if code == OpCode::Create {
                        MultiResult::Create(p)
                    } else {
                        MultiResult::Create2(p, s)
                    };
                    (t, r)
                })
            }
            MultiOp::CreateTtl(r) => {
                let c = CreateRequest {
                    path: r.path,
                    data: r.data,
                    acl: r.acl,
                    flags: r.flags,
                };
                create(tree, hdr, ids, rules, OpCode::CreateTtl, c, r.ttl)
                    .map(|(t, p, s)| (t, MultiResult::Create2(p, s)))
            }
            MultiOp::Delete(d) => delete(tree, hdr, ids, &d).map(|t| (t, MultiResult::Delete)),
            MultiOp::SetData(s) => {
                set_data(tree, hdr, ids, rules, s).map(|(t, st)| (t, MultiResult::SetData(st)))
            }
            MultiOp::Check(c) => check(tree, ids, &c).map(|t| (t, MultiResult::Check)),
            MultiOp::GetChildren(_) | MultiOp::GetData(_) => Err(ErrorCode::BAD_ARGUMENTS),
        };
        match r {
            Ok((t, res)) => {
                txns.push(t);
                results.push(res);
            }
            Err(e) => {
                // The reference's answer to a failed multi: earlier ops 0,
                // the failing op its code, later ops RuntimeInconsistency.
                tree.rollback();
                let mut errs = vec![MultiResult::Error(0); i];
                errs.push(MultiResult::Error(e.0));
                errs.extend(std::iter::repeat_n(
                    MultiResult::Error(ErrorCode::RUNTIME_INCONSISTENCY.0),
                    ops - i - 1,
                ));
                let txn = Txn::Multi(
                    errs.iter()
                        .map(|r| match r {
                            MultiResult::Error(e) => Txn::Error(*e),
                            _ => unreachable!(),
                        })
                        .collect(),
                );
                return Ok((txn, Applied::Multi(errs)));
            }
        }
    }
    Ok((Txn::Multi(txns), Applied::Multi(results)))
}
