//! ZooKeeper errors as errno values. One table, also printed in zkfs(8):
//! scripts can tell "the session is gone" (EKEYEXPIRED) from "no server answered"
//! (ETIMEDOUT) from "someone else changed it first" (ESTALE) from "no right"
//! (EACCES), instead of the EIO-for-everything of earlier tools.

use zk_proto::ErrorCode;

pub fn errno(e: ErrorCode) -> i32 {
    use libc::*;
    match e {
        ErrorCode::NO_NODE => ENOENT,
        ErrorCode::NODE_EXISTS => EEXIST,
        ErrorCode::NOT_EMPTY => ENOTEMPTY,
        ErrorCode::NO_AUTH | ErrorCode::AUTH_FAILED => EACCES,
        ErrorCode::BAD_VERSION => ESTALE,
        ErrorCode::NO_CHILDREN_FOR_EPHEMERALS => ENOTDIR,
        ErrorCode::INVALID_ACL | ErrorCode::BAD_ARGUMENTS => EINVAL,
        ErrorCode::SESSION_EXPIRED => EKEYEXPIRED,
        ErrorCode::CONNECTION_LOSS | ErrorCode::OPERATION_TIMEOUT => ETIMEDOUT,
        ErrorCode::QUOTA_EXCEEDED => EDQUOT,
        ErrorCode::UNIMPLEMENTED => ENOSYS,
        ErrorCode::NOT_READ_ONLY => EROFS,
        ErrorCode::THROTTLED_OP => EAGAIN,
        ErrorCode::SESSION_MOVED => ETIMEDOUT,
        _ => EIO,
    }
}

/// The table as (ZooKeeper error, errno name): the test below holds zkfs(8)
/// to it.
#[cfg(test)]
const TABLE: &[(&str, &str)] = &[
    ("NoNode", "ENOENT"),
    ("NodeExists", "EEXIST"),
    ("NotEmpty", "ENOTEMPTY"),
    ("NoAuth, AuthFailed", "EACCES"),
    ("BadVersion", "ESTALE"),
    ("NoChildrenForEphemerals", "ENOTDIR"),
    ("InvalidACL, BadArguments", "EINVAL"),
    ("SessionExpired", "EKEYEXPIRED"),
    (
        "ConnectionLoss, OperationTimeout, SessionMoved",
        "ETIMEDOUT",
    ),
    ("QuotaExceeded", "EDQUOT"),
    ("Unimplemented", "ENOSYS"),
    ("NotReadOnly (server read-only)", "EROFS"),
    ("Throttled", "EAGAIN"),
    ("any other", "EIO"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_errors_for_distinct_failures() {
        let v = [
            errno(ErrorCode::SESSION_EXPIRED),
            errno(ErrorCode::CONNECTION_LOSS),
            errno(ErrorCode::BAD_VERSION),
            errno(ErrorCode::NO_AUTH),
            errno(ErrorCode::NO_NODE),
        ];
        let set: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(set.len(), v.len());
        assert_eq!(errno(ErrorCode(-999)), libc::EIO);
    }

    #[test]
    fn man_page_has_the_table() {
        let man = include_str!("../../man/zkfs.8");
        for (zk, e) in TABLE {
            assert!(
                man.lines().any(|l| l.starts_with(zk) && l.ends_with(e)),
                "zkfs(8) lacks {zk} -> {e}"
            );
        }
        let pairs = [
            (ErrorCode::NO_NODE, libc::ENOENT),
            (ErrorCode::NODE_EXISTS, libc::EEXIST),
            (ErrorCode::NOT_EMPTY, libc::ENOTEMPTY),
            (ErrorCode::NO_AUTH, libc::EACCES),
            (ErrorCode::BAD_VERSION, libc::ESTALE),
            (ErrorCode::NO_CHILDREN_FOR_EPHEMERALS, libc::ENOTDIR),
            (ErrorCode::INVALID_ACL, libc::EINVAL),
            (ErrorCode::SESSION_EXPIRED, libc::EKEYEXPIRED),
            (ErrorCode::CONNECTION_LOSS, libc::ETIMEDOUT),
            (ErrorCode::QUOTA_EXCEEDED, libc::EDQUOT),
            (ErrorCode::UNIMPLEMENTED, libc::ENOSYS),
            (ErrorCode::NOT_READ_ONLY, libc::EROFS),
            (ErrorCode::THROTTLED_OP, libc::EAGAIN),
        ];
        for (zk, e) in pairs {
            assert_eq!(errno(zk), e, "{}", zk.name());
        }
    }
}
