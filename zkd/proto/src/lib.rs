//! zk-proto: the ZooKeeper client wire protocol, nothing else.
//!
//! Map of the crate:
//! - `jute`    — the primitive encoding (big-endian ints, length-prefixed buffers,
//!   strings and vectors) as a `Reader` over a byte slice and a `Writer`.
//! - `records` — the records of `zookeeper.jute` that clients send and receive.
//! - `codes`   — opcodes, error codes, create modes, watch event types and states.
//! - `frame`   — the frame length check (`jute.maxbuffer`) and recognising
//!   four-letter words.
//!
//! No I/O lives here: the server and any client own their sockets and hand bytes
//! in and out, so every codec path can be tested from captured bytes alone.

pub mod codes;
pub mod frame;
pub mod jute;
pub mod records;

pub use codes::{CreateMode, ErrorCode, EventType, KeeperState, OpCode};
pub use jute::{DecodeError, Reader, Writer};
