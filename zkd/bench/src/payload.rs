//! The data requests carry. `--fill random` (the default) gives each
//! operation its own slice of a pseudo-random pool, which does not compress;
//! `--fill x` repeats one byte, which compresses to almost nothing. zkd's
//! RocksDB blocks are LZ4-compressed and ZooKeeper stores bytes as they
//! come, so `x` flatters zkd: 10 KiB set 16x32 ran at about twice the rate
//! with `x` as with `random`.

/// Pseudo-random bytes to pick slices from; large enough that two slices
/// in one 4 KiB storage block rarely share bytes.
const POOL: usize = 1 << 20;

/// `--fill`: what the data is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fill {
    Random,
    X,
}

impl std::str::FromStr for Fill {
    type Err = String;
    fn from_str(s: &str) -> Result<Fill, String> {
        match s {
            "random" => Ok(Fill::Random),
            "x" => Ok(Fill::X),
            _ => Err(format!("--fill: x or random, not {s}")),
        }
    }
}

pub struct Payload {
    pool: Vec<u8>,
    size: usize,
}

/// splitmix64: a fixed, seedable sequence (the bench needs no entropy, only
/// bytes without repeats a compressor could find).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Payload {
    pub fn new(fill: Fill, size: usize) -> Payload {
        let pool = match fill {
            Fill::X => vec![b'x'; size],
            Fill::Random => (0..(POOL + size).div_ceil(8) as u64)
                .flat_map(|i| mix(i).to_le_bytes())
                .collect(),
        };
        Payload { pool, size }
    }

    /// The data of the `i`th value in operation `n` of connection `c`: the
    /// same for the same arguments, different (under `random`) otherwise.
    pub fn get(&self, c: usize, n: u64, i: u64) -> &[u8] {
        let room = (self.pool.len() - self.size) as u64;
        let at = if room == 0 {
            0
        } else {
            mix((c as u64) << 40 ^ n << 4 ^ i) % (room + 1)
        };
        &self.pool[at as usize..at as usize + self.size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_is_one_byte_repeated() {
        let p = Payload::new(Fill::X, 100);
        assert_eq!(p.get(3, 7, 0), &[b'x'; 100][..]);
        assert!("zeros".parse::<Fill>().is_err());
        assert_eq!("random".parse(), Ok(Fill::Random));
    }

    #[test]
    fn random_slices_have_the_size_and_differ() {
        let p = Payload::new(Fill::Random, 10240);
        let a = p.get(0, 1, 0);
        assert_eq!(a.len(), 10240);
        assert_eq!(a, p.get(0, 1, 0));
        assert_ne!(a, p.get(0, 2, 0));
        assert_ne!(a, p.get(1, 1, 0));
        assert_ne!(a, p.get(0, 1, 1));
        // No run of repeated bytes a compressor would live on.
        let distinct = a.iter().collect::<std::collections::HashSet<_>>().len();
        assert!(distinct > 250, "{distinct}");
        assert_eq!(Payload::new(Fill::Random, 0).get(5, 5, 5), b"");
    }
}
