//! The applied state a leader sends in a SNAP: the tree and the sessions as
//! the store holds them at one zxid. A learner whose log cannot be continued
//! with a DIFF (it is behind the leader's compacted log, or holds txns the
//! leader never had) installs it in place of its own.
//!
//! Format (jute integers and buffers): magic `ZKDSTAT1`, the zxid, then
//! records, each a tag: 1 = node (key as stored, node record), 2 = session
//! (id, session record), 0 = end. Records are the store's own encodings, so
//! sending costs one scan and installing one write. Everything is checked
//! before anything is installed: a damaged state is refused, never half
//! applied.

use zk_proto::jute::{Reader, Writer};
use zkd_core::server::decode_session;

use crate::storage::{Loaded, TreeBuilder};

const MAGIC: &[u8; 8] = b"ZKDSTAT1";
const TAG_END: i32 = 0;
const TAG_NODE: i32 = 1;
const TAG_SESSION: i32 = 2;

/// Builds a state record by record.
pub struct StateWriter(Writer);

impl StateWriter {
    pub fn new(zxid: u64) -> StateWriter {
        let mut w = Writer::new();
        w.bytes(MAGIC).i64(zxid as i64);
        StateWriter(w)
    }

    pub fn node(&mut self, key: &[u8], record: &[u8]) {
        self.0.i32(TAG_NODE).buffer(key).buffer(record);
    }

    pub fn session(&mut self, id: i64, record: &[u8]) {
        self.0.i32(TAG_SESSION).i64(id).buffer(record);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.i32(TAG_END);
        self.0.buf
    }
}

/// A state split into the store's records, borrowed from its bytes.
pub struct Records<'a> {
    pub zxid: u64,
    pub nodes: Vec<(&'a [u8], &'a [u8])>,
    pub sessions: Vec<(i64, &'a [u8])>,
}

pub fn records(state: &[u8]) -> Result<Records<'_>, String> {
    if state.len() < MAGIC.len() || &state[..MAGIC.len()] != MAGIC {
        return Err("not a zkd state (bad magic)".into());
    }
    let mut r = Reader::new(&state[MAGIC.len()..]);
    let bad = |e: zk_proto::jute::DecodeError| format!("damaged state: {e}");
    let zxid = r.i64().map_err(bad)?;
    if zxid < 0 {
        return Err(format!("damaged state: zxid {zxid}"));
    }
    let (mut nodes, mut sessions) = (Vec::new(), Vec::new());
    loop {
        match r.i32().map_err(bad)? {
            TAG_END => break,
            TAG_NODE => {
                let k = r.buffer_opt().map_err(bad)?.unwrap_or_default();
                let v = r.buffer_opt().map_err(bad)?.unwrap_or_default();
                nodes.push((k, v));
            }
            TAG_SESSION => {
                let id = r.i64().map_err(bad)?;
                let v = r.buffer_opt().map_err(bad)?.unwrap_or_default();
                sessions.push((id, v));
            }
            t => return Err(format!("damaged state: record tag {t}")),
        }
    }
    if r.remaining() != 0 {
        return Err(format!(
            "damaged state: {} bytes after the end",
            r.remaining()
        ));
    }
    Ok(Records {
        zxid: zxid as u64,
        nodes,
        sessions,
    })
}

/// Decodes and checks a whole state: every record, and the tree's shape.
pub fn load(state: &[u8]) -> Result<Loaded, String> {
    let rec = records(state)?;
    let mut tree = TreeBuilder::new(rec.nodes.len());
    for (k, v) in &rec.nodes {
        tree.add(k, v).map_err(|e| e.to_string())?;
    }
    let tree = tree.finish().map_err(|e| e.to_string())?;
    let mut sessions = Vec::with_capacity(rec.sessions.len());
    for (id, v) in &rec.sessions {
        sessions.push(decode_session(*id, v).ok_or_else(|| format!("damaged session 0x{id:x}"))?);
    }
    Ok(Loaded {
        tree,
        last_zxid: rec.zxid as i64,
        sessions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::node_key;
    use zk_proto::records::Acl;
    use zkd_core::tree::DataTree;

    fn sample() -> Vec<u8> {
        let mut t = DataTree::new();
        t.begin();
        t.create("/a", b"x".to_vec(), Acl::open_unsafe(), 0, 0, 1, 5);
        t.create("/a/b", b"y".to_vec(), Acl::open_unsafe(), 7, 1, 2, 5);
        t.commit();
        let mut w = StateWriter::new(2);
        for (p, n) in t.iter() {
            w.node(&node_key(p), &n.encode());
        }
        w.session(7, &zkd_core::server::encode_session(4000, &[3; 16]));
        w.finish()
    }

    #[test]
    fn a_state_round_trips_into_the_same_tree() {
        let l = load(&sample()).unwrap();
        assert_eq!(l.last_zxid, 2);
        assert_eq!(l.tree.get("/a/b").unwrap().data[..], b"y"[..]);
        assert_eq!(l.tree.get("/a").unwrap().child_count, 1);
        assert_eq!(l.sessions.len(), 1);
        assert_eq!(l.tree.digest(), l.tree.digest_recomputed());
    }

    #[test]
    fn damaged_states_are_refused_whole() {
        let good = sample();
        assert!(load(b"nonsense").is_err());
        for cut in [8, 16, good.len() / 2, good.len() - 1] {
            assert!(load(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(load(&extra).is_err());
        // A node without its parent.
        let mut w = StateWriter::new(1);
        w.node(&node_key("/x/y"), &sample_node());
        assert!(load(&w.finish()).is_err());
        for i in (8..good.len()).step_by(7) {
            let mut b = good.clone();
            b[i] ^= 0x5a;
            // Either refused, or (a flipped data byte) still a valid tree.
            if let Ok(l) = load(&b) {
                assert_eq!(l.tree.digest(), l.tree.digest_recomputed());
            }
        }
    }

    fn sample_node() -> Vec<u8> {
        let mut t = DataTree::new();
        t.begin();
        t.create("/n", vec![], Acl::open_unsafe(), 0, 0, 1, 5);
        t.commit();
        t.get("/n").unwrap().encode()
    }
}
