//! The replicated state's Merkle tree and the checks of state sync, pure (no storage, no
//! clock, no I/O), so that the replica and the simulator run the same code.
//!
//! - [`tree`]: the state tree, its witnesses and range proofs (the normative description
//!   of the tree is in its docs).
//! - [`sync`]: state sync's manifest and chunks, and the [`sync::Verifier`] a syncing node
//!   believes a peer through.
//! - [`memory`]: a whole state in memory, hashed and served as a checkpoint is (the
//!   simulator's node states).

/// The newest state layout any release knows. A value's hash commits to the layout it is
/// stored in ([`tree::value_hash`]), so a reader checking a witness must know it.
pub const NEWEST_KNOWN_SCHEMA: u32 = 2;

pub mod memory;
pub mod sync;
pub mod tree;
