//! A node's data as the tree holds it: small data in a box of its own,
//! big data shared (`Bytes`), so that its record on the way to storage
//! (`record`), the journal and the txn that wrote it refer to one buffer
//! instead of copying it.
//!
//! Two words, as a boxed slice alone is. Holding every node's data as
//! `Bytes` (four words) raised a restarted standalone server's RSS with
//! 1,000,000 znodes of 100 bytes from 267 to 292 MiB, past a third of
//! ZooKeeper's 862 MiB (`scripts/bench-scale.py`).

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

/// Data at least this big is shared, not copied: below it a copy costs
/// less than sharing (one more allocation).
pub const SHARE_MIN: usize = 1024;

#[derive(Clone, PartialEq, Eq)]
pub enum Data {
    Small(Box<[u8]>),
    /// The `Arc` keeps the enum two words (it takes the box's niche).
    Big(Arc<Bytes>),
}

impl Data {
    /// The data as `Bytes` sharing its buffer, when it is shared.
    pub fn shared(&self) -> Option<Bytes> {
        match self {
            Data::Small(_) => None,
            Data::Big(b) => Some(Bytes::clone(b)),
        }
    }
}

impl Default for Data {
    fn default() -> Data {
        Data::Small(Box::default())
    }
}

impl Deref for Data {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Data::Small(b) => b,
            Data::Big(b) => b,
        }
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Data({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for Data {
    fn from(v: Vec<u8>) -> Data {
        if v.len() < SHARE_MIN {
            Data::Small(v.into_boxed_slice())
        } else {
            Data::Big(Arc::new(Bytes::from(v)))
        }
    }
}

/// Shared if big, else copied: cloning a `Bytes` made from a `Vec` costs
/// an allocation of its own, more than copying small data.
impl From<&Bytes> for Data {
    fn from(b: &Bytes) -> Data {
        if b.len() < SHARE_MIN {
            Data::Small(Box::from(&b[..]))
        } else {
            Data::Big(Arc::new(b.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_data_is_shared_and_small_data_boxed_in_two_words() {
        assert_eq!(
            std::mem::size_of::<Data>(),
            2 * std::mem::size_of::<usize>()
        );
        let big = Bytes::from(vec![5u8; SHARE_MIN]);
        let d = Data::from(&big);
        assert_eq!(d.shared().unwrap().as_ptr(), big.as_ptr());
        assert_eq!(&d[..], &big[..]);
        let d = Data::from(vec![5u8; SHARE_MIN]);
        assert_eq!(d.shared().unwrap().as_ptr(), d.as_ptr());
        let small = Data::from(&Bytes::from(vec![5u8; SHARE_MIN - 1]));
        assert!(small.shared().is_none());
        assert_eq!(&small[..], &[5u8; SHARE_MIN - 1][..]);
        assert!(Data::from(vec![1]).shared().is_none());
        assert!(Data::default().is_empty());
    }
}
