//! The tree digest's per-node hash. A replica adds up `node_hash` over its
//! nodes (`DataTree::digest`) and compares the sum with the one each
//! proposal carries from the leader, so the hash must be the same on every
//! build and platform: fixed constants, little-endian words, no `Hasher`
//! of the standard library (its algorithm may change).
//!
//! Every write hashes the node before and after it, data included, on the
//! thread that decides all requests; the hash reads 8 bytes per step, in
//! four lanes (scheme 2). Scheme 1, FNV-1a a byte at a time, cost ~15 µs per 10 KiB
//! node, a fifth of zkd's CPU in a 10 KiB setData run. Proposals say which
//! scheme their digest is in (`DIGEST_SCHEME`), so a member never compares
//! digests of two schemes: one written by an earlier zkd is not checked.

use zk_proto::records::Acl;

use crate::tree::NodeStat;

/// The scheme `node_hash` implements, carried by every proposal.
pub const DIGEST_SCHEME: u8 = 2;

const K: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K).rotate_left(29)
}

fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// `b` as little-endian words, after its length (so "ab" then "c" differs
/// from "a" then "bc"). Whole 32-byte blocks go through four independent
/// lanes, so the multiplies overlap instead of waiting on each other; the
/// words after them, the last padded with zeros, through one.
fn eat(mut h: u64, b: &[u8]) -> u64 {
    h = mix(h, b.len() as u64);
    let mut blocks = b.chunks_exact(32);
    if b.len() >= 32 {
        let mut lanes = [h, h ^ K, h.rotate_left(16), h.rotate_left(48) ^ K];
        for block in &mut blocks {
            for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
                *lane = mix(*lane, word(w));
            }
        }
        h = lanes.iter().fold(h, |h, lane| mix(h, *lane));
    }
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        h = mix(h, word(w));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(w));
    }
    h
}

/// The hash of one node: path, data, stat and ACL.
pub fn node_hash(path: &str, data: &[u8], acl: &[Acl], s: &NodeStat) -> u64 {
    let mut h = eat(K, path.as_bytes());
    h = eat(h, data);
    for v in [
        s.czxid,
        s.mzxid,
        s.ctime,
        s.mtime,
        s.ephemeral_owner,
        s.pzxid,
    ] {
        h = mix(h, v as u64);
    }
    h = mix(
        h,
        (s.version as u32 as u64) << 32 | s.cversion as u32 as u64,
    );
    h = mix(h, s.aversion as u32 as u64);
    for a in acl {
        h = mix(h, a.perms as u32 as u64);
        h = eat(h, a.id.scheme.as_bytes());
        h = eat(h, a.id.id.as_bytes());
    }
    // A sum of these must not let similar nodes cancel: spread every input
    // bit over the whole word (MurmurHash3's finalizer).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zk_proto::records::Id;

    fn stat() -> NodeStat {
        NodeStat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 8,
            pzxid: 9,
        }
    }

    /// The digest is compared across builds and machines: these values
    /// must never change while the scheme number stays the same.
    #[test]
    fn the_hash_is_fixed_for_its_scheme() {
        let acl = Acl::open_unsafe();
        assert_eq!(DIGEST_SCHEME, 2);
        assert_eq!(
            node_hash("/", b"", &acl, &NodeStat::default()),
            0x6fa1_a237_fa32_3892
        );
        assert_eq!(
            node_hash("/app/config", &[7u8; 10240], &acl, &stat()),
            0x2153_1587_249f_5441
        );
    }

    /// Every field counts, and bytes do not slide between fields.
    #[test]
    fn every_field_and_boundary_changes_the_hash() {
        let acl = Acl::open_unsafe();
        let base = node_hash("/a/b", b"abc", &acl, &stat());
        let mut seen = std::collections::HashSet::new();
        seen.insert(base);
        let mut differs =
            |h: u64, what: &str| assert!(seen.insert(h), "{what} did not change the hash");
        differs(node_hash("/a/c", b"abc", &acl, &stat()), "path");
        differs(node_hash("/a/b", b"abd", &acl, &stat()), "data");
        differs(node_hash("/a/b", b"abc\0", &acl, &stat()), "data length");
        differs(
            node_hash("/a/ba", b"bc", &acl, &stat()),
            "path/data boundary",
        );
        for i in 0..9 {
            let mut s = stat();
            match i {
                0 => s.czxid += 1,
                1 => s.mzxid += 1,
                2 => s.ctime += 1,
                3 => s.mtime += 1,
                4 => s.version += 1,
                5 => s.cversion += 1,
                6 => s.aversion += 1,
                7 => s.ephemeral_owner += 1,
                _ => s.pzxid += 1,
            }
            differs(
                node_hash("/a/b", b"abc", &acl, &s),
                &format!("stat field {i}"),
            );
        }
        let other = vec![Acl {
            perms: 31,
            id: Id {
                scheme: "digest".into(),
                id: "u:x".into(),
            },
        }];
        differs(node_hash("/a/b", b"abc", &other, &stat()), "acl");
        // Any one byte, in any lane or in the words after the blocks.
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        differs(node_hash("/d", &data, &acl, &stat()), "data");
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 1;
            differs(
                node_hash("/d", &d, &acl, &stat()),
                &format!("data byte {i}"),
            );
        }
        for n in 0..data.len() {
            differs(
                node_hash("/d", &data[..n], &acl, &stat()),
                &format!("{n} bytes"),
            );
        }
    }
}
