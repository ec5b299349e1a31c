//! A frame on its way to a client: one buffer of its own, or a shared body
//! between a head and a tail of its own. The shared form carries a big
//! parent's encoded child list (`server::children_cache`) and a node's big
//! data (`data::Data::Big`) to the socket without a copy per reply: with 8
//! connections of 8 getChildren each of a node with 10,000 children,
//! copying the ~150 KB list into every reply was half of zkd's CPU time
//! (perf); under a 3-member ensemble's 16x32 read/write mix of 10 KiB
//! data, copying the data into getData replies was 5% of the machine's.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    Whole(Vec<u8>),
    Shared {
        head: Vec<u8>,
        body: Bytes,
        tail: Vec<u8>,
    },
}

impl OutFrame {
    pub fn len(&self) -> usize {
        match self {
            OutFrame::Whole(b) => b.len(),
            OutFrame::Shared { head, body, tail } => head.len() + body.len() + tail.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the frame starts with: all of it, or its head (the
    /// length and the reply header).
    pub fn head(&self) -> &[u8] {
        match self {
            OutFrame::Whole(b) => b,
            OutFrame::Shared { head, .. } => head,
        }
    }

    /// Its bytes in order, in up to three pieces.
    pub fn parts(&self) -> [&[u8]; 3] {
        match self {
            OutFrame::Whole(b) => [b, &[], &[]],
            OutFrame::Shared { head, body, tail } => [head, body, tail],
        }
    }

    /// Its bytes in one buffer (a copy of a shared body).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            OutFrame::Whole(b) => b,
            f => f.parts().concat(),
        }
    }
}

impl From<Vec<u8>> for OutFrame {
    fn from(b: Vec<u8>) -> OutFrame {
        OutFrame::Whole(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_frame_is_its_parts_in_order() {
        let f = OutFrame::Shared {
            head: vec![1, 2],
            body: Bytes::from_static(&[3, 4, 5]),
            tail: vec![6],
        };
        assert_eq!(f.len(), 6);
        assert_eq!(f.head(), &[1, 2]);
        assert_eq!(f.clone().into_vec(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(OutFrame::from(vec![7, 8]).parts().concat(), vec![7, 8]);
    }
}
