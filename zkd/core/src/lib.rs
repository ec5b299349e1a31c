//! zkd-core: the part of zkd that decides, with no I/O of its own.
//!
//! Data flows through it like this:
//! - `server::Server` takes a connection's handshake (`connect`), its frames
//!   (`packet`), its end (`disconnected`) and the passage of time (`tick`),
//!   always with `Now` passed in.
//! - Reads are answered from `tree::DataTree`; writes go through
//!   `prep::execute`, which checks them as the reference does, turns them into
//!   a `txn::Txn` and applies it (a failed `multi` rolls back its journal).
//! - Each applied txn fires `watch::WatchTable` watches and yields a
//!   `server::Persist` (log record, changed nodes, changed sessions).
//! - The runtime makes `Persist` durable, then releases the `server::Effect`s
//!   (frames and closes) produced up to that point: nothing a client hears
//!   describes state that could still be lost.
//!
//! - Replicas apply txns prepared elsewhere with `apply::apply_tree`; the
//!   tree keeps a digest (`DataTree::digest`, summed from
//!   `digest::node_hash`) so replicas can compare.
//!
//! Supporting modules: `path` (validation), `acl` (identities and checks),
//! `index` (the (parent, name) order that keeps a node's children adjacent),
//! `data` (a node's data, boxed when small, shared when big), `record` (a
//! node's persisted form, its data shared with the tree),
//! `session` (the session table and bucketed expiry), `out_frame` (a frame
//! to a client, whole or around a shared body).

pub mod acl;
pub mod apply;
pub mod data;
pub mod digest;
pub mod index;
pub mod out_frame;
pub mod path;
pub mod prep;
pub mod quota;
pub mod record;
pub mod server;
pub mod session;
pub mod tree;
pub mod txn;
pub mod watch;
