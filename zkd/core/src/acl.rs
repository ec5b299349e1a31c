//! Access control as the reference does it: which identities a session holds
//! (`ip` always, `digest` after an auth packet), whether an ACL grants a
//! permission to them, and how a client's ACL is checked and expanded
//! (`fixupACL`: the `auth` scheme becomes the session's own identities).

use base64::Engine;
use sha1::{Digest, Sha1};
use zk_proto::records::{Acl, Id};

/// `DigestAuthenticationProvider.generateDigest`: `user:base64(sha1(user:password))`.
pub fn digest_id(user_colon_password: &str) -> Option<String> {
    let user = user_colon_password.split(':').next()?;
    if !user_colon_password.contains(':') {
        return None;
    }
    let hash = Sha1::digest(user_colon_password.as_bytes());
    Some(format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    ))
}

/// Whether `ip_acl` (an address, optionally `/bits`) covers `client_ip`.
fn ip_matches(ip_acl: &str, client_ip: &str) -> bool {
    let (addr, bits) = match ip_acl.split_once('/') {
        Some((a, b)) => match b.parse::<u32>() {
            Ok(b) => (a, Some(b)),
            Err(_) => return false,
        },
        None => (ip_acl, None),
    };
    match (
        addr.parse::<std::net::IpAddr>(),
        client_ip.parse::<std::net::IpAddr>(),
    ) {
        (Ok(std::net::IpAddr::V4(a)), Ok(std::net::IpAddr::V4(c))) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(c) & mask
        }
        (Ok(std::net::IpAddr::V6(a)), Ok(std::net::IpAddr::V6(c))) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(c) & mask
        }
        _ => false,
    }
}

/// `ZooKeeperServer.checkACL`: true if some entry of `acl` grants `perm` to
/// one of `ids`. An empty ACL grants everything; a `super` id passes always.
pub fn allows(acl: &[Acl], perm: i32, ids: &[Id]) -> bool {
    if acl.is_empty() || ids.iter().any(|i| i.scheme == "super") {
        return true;
    }
    acl.iter().any(|a| {
        a.perms & perm != 0
            && match a.id.scheme.as_str() {
                "world" => a.id.id == "anyone",
                "ip" => ids
                    .iter()
                    .any(|i| i.scheme == "ip" && ip_matches(&a.id.id, &i.id)),
                scheme => ids.iter().any(|i| i.scheme == scheme && i.id == a.id.id),
            }
    })
}

/// `PrepRequestProcessor.fixupACL`: refuses an empty or malformed ACL,
/// replaces `auth` entries with the session's authenticated identities, and
/// drops duplicates. `None` is InvalidACL.
pub fn fixup(acl: &[Acl], ids: &[Id]) -> Option<Vec<Acl>> {
    if acl.is_empty() {
        return None;
    }
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    let mut push = |a: Acl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for a in acl {
        match a.id.scheme.as_str() {
            "world" if a.id.id == "anyone" => push(a.clone()),
            "auth" => {
                let mut any = false;
                for i in ids
                    .iter()
                    .filter(|i| i.scheme != "ip" && i.scheme != "super")
                {
                    push(Acl {
                        perms: a.perms,
                        id: i.clone(),
                    });
                    any = true;
                }
                if !any {
                    return None;
                }
            }
            "digest" if a.id.id.split(':').count() == 2 => push(a.clone()),
            "ip" if valid_ip_acl(&a.id.id) => push(a.clone()),
            _ => return None,
        }
    }
    Some(out)
}

fn valid_ip_acl(s: &str) -> bool {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (s, Some(0)),
    };
    bits.is_some() && addr.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zk_proto::codes::perms;

    #[test]
    fn digest_matches_the_reference() {
        // `DigestAuthenticationProvider.generateDigest("super:test")`, a value
        // quoted in the ZooKeeper administrator's guide.
        assert_eq!(
            digest_id("super:test").unwrap(),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn checks() {
        let me = vec![
            Id {
                scheme: "ip".into(),
                id: "127.0.0.1".into(),
            },
            Id {
                scheme: "digest".into(),
                id: "u:h".into(),
            },
        ];
        assert!(allows(&Acl::open_unsafe(), perms::WRITE, &[]));
        assert!(!allows(&Acl::read_unsafe(), perms::WRITE, &me));
        assert!(allows(
            &[Acl::new(perms::ALL, "digest", "u:h")],
            perms::DELETE,
            &me
        ));
        assert!(!allows(
            &[Acl::new(perms::ALL, "digest", "v:h")],
            perms::DELETE,
            &me
        ));
        assert!(allows(
            &[Acl::new(perms::READ, "ip", "127.0.0.0/8")],
            perms::READ,
            &me
        ));
        assert!(!allows(
            &[Acl::new(perms::READ, "ip", "10.0.0.0/8")],
            perms::READ,
            &me
        ));
    }

    #[test]
    fn fixup_expands_auth_and_refuses_bad_entries() {
        let ids = vec![
            Id {
                scheme: "ip".into(),
                id: "127.0.0.1".into(),
            },
            Id {
                scheme: "digest".into(),
                id: "u:h".into(),
            },
        ];
        assert_eq!(
            fixup(&[Acl::new(31, "auth", "")], &ids).unwrap(),
            vec![Acl::new(31, "digest", "u:h")]
        );
        assert_eq!(fixup(&[Acl::new(31, "auth", "")], &ids[..1]), None);
        assert_eq!(fixup(&[], &ids), None);
        assert_eq!(fixup(&[Acl::new(31, "world", "someone")], &ids), None);
        assert_eq!(fixup(&[Acl::new(31, "nosuch", "x")], &ids), None);
    }
}
