//! Arbitrary request bodies (multi included) through request preparation on
//! a small tree: every outcome is a txn or an error code, never a panic, and a
//! rejected request leaves the tree as it was.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zk_proto::records::Id;
use zk_proto::OpCode;
use zkd_core::prep::{execute, Rules};
use zkd_core::tree::DataTree;
use zkd_core::txn::TxnHeader;

const OPS: &[OpCode] = &[
    OpCode::Create,
    OpCode::Create2,
    OpCode::CreateContainer,
    OpCode::CreateTtl,
    OpCode::Delete,
    OpCode::SetData,
    OpCode::SetAcl,
    OpCode::Check,
    OpCode::Multi,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let op = OPS[sel as usize % OPS.len()];
    let mut tree = DataTree::new();
    let hdr = TxnHeader { session: 0x100, cxid: 1, zxid: 2, time: 1000 };
    let ids = vec![Id { scheme: "world".into(), id: "anyone".into() }];
    let rules = Rules { extended_types: sel & 0x80 != 0, enforce_quota: sel & 0x40 != 0 };
    let before = tree.node_count();
    tree.begin();
    match execute(&mut tree, &hdr, &ids, rules, op, body) {
        Ok(_) => {
            tree.commit();
        }
        Err(_) => {
            tree.rollback();
            assert_eq!(tree.node_count(), before);
        }
    }
});
