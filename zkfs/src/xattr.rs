//! Extended attributes: the znode's Stat, its ACL, the mount's session and the
//! lock token, under `user.zk.`. Values are text so `getfattr` shows them.

use zk_proto::codes::perms;
use zk_proto::records::{Acl, Stat};

use crate::errno::errno;
use crate::shared::Shared;

const STAT_NAMES: &[&str] = &[
    "czxid",
    "mzxid",
    "pzxid",
    "ctime",
    "mtime",
    "version",
    "cversion",
    "aversion",
    "ephemeralOwner",
    "dataLength",
    "numChildren",
];

fn stat_field(st: &Stat, name: &str) -> Option<String> {
    Some(match name {
        "czxid" => format!("0x{:x}", st.czxid),
        "mzxid" => format!("0x{:x}", st.mzxid),
        "pzxid" => format!("0x{:x}", st.pzxid),
        "ctime" => st.ctime.to_string(),
        "mtime" => st.mtime.to_string(),
        "version" => st.version.to_string(),
        "cversion" => st.cversion.to_string(),
        "aversion" => st.aversion.to_string(),
        "ephemeralOwner" => format!("0x{:x}", st.ephemeral_owner),
        "dataLength" => st.data_length.to_string(),
        "numChildren" => st.num_children.to_string(),
        _ => return None,
    })
}

pub fn perms_text(p: i32) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (perms::CREATE, 'c'),
        (perms::DELETE, 'd'),
        (perms::READ, 'r'),
        (perms::WRITE, 'w'),
        (perms::ADMIN, 'a'),
    ] {
        if p & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// `scheme:id:perms` per line, as zkCli's setAcl takes them (comma-separated
/// entries are accepted too). The id may itself contain ':' (digest, ip:port).
pub fn parse_acl(text: &str) -> Result<Vec<Acl>, i32> {
    let mut out = Vec::new();
    for item in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (rest, p) = item.rsplit_once(':').ok_or(libc::EINVAL)?;
        let (scheme, id) = rest.split_once(':').ok_or(libc::EINVAL)?;
        let mut bits = 0;
        for c in p.chars() {
            bits |= match c {
                'c' => perms::CREATE,
                'd' => perms::DELETE,
                'r' => perms::READ,
                'w' => perms::WRITE,
                'a' => perms::ADMIN,
                _ => return Err(libc::EINVAL),
            };
        }
        out.push(Acl::new(bits, scheme, id));
    }
    if out.is_empty() {
        return Err(libc::EINVAL);
    }
    Ok(out)
}

/// The answer for an attribute zkfs does not have. Only the `user.`
/// namespace exists here: for `security.`, `system.` and `trusted.` names
/// (SELinux labels, POSIX ACLs) the answer is ENOTSUP, "not supported by
/// this filesystem", not ENODATA. `ls -l` asks for a label and an ACL of
/// every file; on ENOTSUP it stops asking for the rest of the mount, on
/// ENODATA it asks again for each file, a round trip through FUSE each.
fn absent(name: &str) -> i32 {
    if name.starts_with("user.") {
        libc::ENODATA
    } else {
        libc::ENOTSUP
    }
}

pub fn get(sh: &Shared, path: &str, name: &str) -> Result<Vec<u8>, i32> {
    let Some(key) = name.strip_prefix("user.zk.") else {
        return Err(absent(name));
    };
    let text = match key {
        "session" => format!("0x{:x}", sh.zk.session_id()),
        "path" => sh.zk.full(path),
        "name" => crate::names::split(path).1.to_string(),
        "lock.token" => match sh.locks.token(path) {
            Some(t) => t.to_string(),
            None => return Err(libc::ENODATA),
        },
        "acl" => {
            let (acl, _) = sh.zk.get_acl(path).map_err(errno)?;
            acl.iter()
                .map(|a| format!("{}:{}:{}\n", a.id.scheme, a.id.id, perms_text(a.perms)))
                .collect()
        }
        "stat" => {
            let st = sh.zk.exists(path).map_err(errno)?;
            STAT_NAMES
                .iter()
                .map(|n| format!("{n}={}\n", stat_field(&st, n).unwrap()))
                .collect()
        }
        k if STAT_NAMES.contains(&k) => {
            let st = sh.zk.exists(path).map_err(errno)?;
            stat_field(&st, k).unwrap()
        }
        _ => return Err(absent(name)),
    };
    Ok(text.into_bytes())
}

pub fn list(sh: &Shared, path: &str) -> Vec<u8> {
    let mut names: Vec<String> = ["stat", "acl", "session", "path", "name"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(STAT_NAMES.iter().map(|s| s.to_string()));
    if sh.locks.token(path).is_some() {
        names.push("lock.token".into());
    }
    let mut out = Vec::new();
    for n in names {
        out.extend(format!("user.zk.{n}").bytes());
        out.push(0);
    }
    out
}

pub fn set(sh: &Shared, path: &str, name: &str, value: &[u8]) -> Result<(), i32> {
    match name {
        "user.zk.acl" => {
            if sh.opts.read_only {
                return Err(libc::EROFS);
            }
            let text = std::str::from_utf8(value).map_err(|_| libc::EINVAL)?;
            let acl = parse_acl(text)?;
            sh.zk.set_acl(path, &acl, -1).map(|_| ()).map_err(errno)
        }
        "user.zk.session" => {
            // The documented way back after expiry: ask for a new session.
            if value.trim_ascii() != b"renew" {
                return Err(libc::EINVAL);
            }
            sh.zk.renew().map_err(errno)
        }
        // Read-only facts: refusing with ENOTSUP lets cp -a / rsync -X carry on.
        _ => Err(libc::ENOTSUP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_user_namespace_exists() {
        assert_eq!(absent("user.zk.nope"), libc::ENODATA);
        assert_eq!(absent("user.mime_type"), libc::ENODATA);
        assert_eq!(absent("security.selinux"), libc::ENOTSUP);
        assert_eq!(absent("system.posix_acl_access"), libc::ENOTSUP);
        assert_eq!(absent("trusted.x"), libc::ENOTSUP);
    }

    #[test]
    fn acl_text_round_trips() {
        let a = parse_acl("world:anyone:r\ndigest:u:abc=:crwda").unwrap();
        assert_eq!(a[0], Acl::new(perms::READ, "world", "anyone"));
        assert_eq!(a[1].id.id, "u:abc=");
        assert_eq!(perms_text(a[1].perms), "cdrwa");
        assert!(parse_acl("world:anyone:x").is_err());
        assert!(parse_acl("").is_err());
        let b = parse_acl("ip:127.0.0.1:rw,world:anyone:r").unwrap();
        assert_eq!(b.len(), 2);
    }
}
