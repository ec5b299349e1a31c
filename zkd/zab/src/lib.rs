//! zkd-zab: ZooKeeper Atomic Broadcast as a pure, deterministic state machine.
//!
//! Map of the crate:
//! - `types` — zxids, txns, votes and the quorum messages.
//! - `codec` — the quorum wire format (total decoding, fuzzed).
//! - `peer`  — one peer: fast leader election, discovery (accepted/current
//!   epoch), synchronisation (DIFF or SNAP, NEWLEADER, UPTODATE) and broadcast
//!   (PROPOSAL/ACK/COMMIT, LOGGED to a follower that forwarded a write,
//!   INFORM to observers, pings), as `step(input) ->
//!   outputs`. Messages and time come in; sends, persistence with explicit
//!   sync barriers, and deliveries go out.
//! - `sim`   — a seeded simulation of whole ensembles with a faulty network,
//!   crashes, and a disk that loses unsynced writes, checking zab.md's
//!   invariants after every step.
//!
//! No I/O and no clock here: zkd's runtime will own sockets and disks.

pub mod codec;
pub mod peer;
pub mod sim;
pub mod types;
