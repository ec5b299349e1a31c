//! A node's persisted form on its way to storage (`Node::record`): its
//! stat and ACL, then its data, length-prefixed, as `Node::encode` lays
//! it out. Big data is not copied into it but shared with the tree, and
//! storage decides what to write: the data itself, or (`valueref`) only a
//! reference to where the log already holds it. Copying every 10 KiB of
//! data into its record was 9% of a loaded leader's tokio threads'
//! samples and 10% of a follower's (3-member ensemble, multi of ten
//! 10 KiB setData, 16x32, `perf`), for a copy that storage mostly threw
//! away.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRecord {
    /// The encoded record.
    Whole(Vec<u8>),
    /// The record up to its data's length prefix, the data, and the
    /// data's CRC-32C, which storage's references carry. It is summed as
    /// the record is made, on the thread that just wrote or copied the
    /// data: on the storage thread (another core, the data no longer in
    /// its cache) the same sums took 24% of a loaded follower's storage
    /// thread, three times what the log's CRC of the same bytes took.
    Split {
        head: Vec<u8>,
        data: Bytes,
        crc: u32,
    },
}

/// Appends `data`, length-prefixed, to a record's head: the layout of a
/// whole record after its stat and ACL.
pub fn push_data(record: &mut Vec<u8>, data: &[u8]) {
    record.extend_from_slice(&(data.len() as i32).to_be_bytes());
    record.extend_from_slice(data);
}

impl NodeRecord {
    /// The encoded record's length.
    pub fn len(&self) -> usize {
        match self {
            NodeRecord::Whole(r) => r.len(),
            NodeRecord::Split { head, data, .. } => head.len() + 4 + data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded record.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            NodeRecord::Whole(r) => r,
            NodeRecord::Split { mut head, data, .. } => {
                head.reserve_exact(4 + data.len());
                push_data(&mut head, &data);
                head
            }
        }
    }

    /// The encoded record, for a record known to be whole: storage makes
    /// every record whole (or a reference) as it takes it.
    pub fn whole(&self) -> &[u8] {
        match self {
            NodeRecord::Whole(r) => r,
            NodeRecord::Split { .. } => panic!("a split node record where a whole one was due"),
        }
    }

    /// Makes the record whole (a copy of shared data).
    pub fn make_whole(&mut self) {
        if let NodeRecord::Split { .. } = self {
            let r = std::mem::replace(self, NodeRecord::Whole(Vec::new()));
            *self = NodeRecord::Whole(r.into_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_record_made_whole_is_the_encoded_record() {
        let whole = [&b"head"[..], &3i32.to_be_bytes(), b"abc"].concat();
        let mut split = NodeRecord::Split {
            head: b"head".to_vec(),
            data: Bytes::from_static(b"abc"),
            crc: crc32c::crc32c(b"abc"),
        };
        assert_eq!(split.len(), whole.len());
        assert_eq!(split.clone().into_vec(), whole);
        split.make_whole();
        assert_eq!(split, NodeRecord::Whole(whole.clone()));
        assert_eq!(split.whole(), &whole[..]);
    }
}
