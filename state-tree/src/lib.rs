//! The replicated state's Merkle tree and the checks of state sync, pure (no storage, no
//! clock, no I/O), so that the replica and the simulator run the same code.
//!
//! - [`tree`]: the state tree, its witnesses and range proofs (the normative description
//!   of the tree is in its docs).
//! - [`sync`]: state sync's manifest and chunks, and the [`sync::Verifier`] a syncing node
//!   believes a peer through.
//! - [`memory`]: a whole state in memory, hashed and served as a checkpoint is (the
//!   simulator's node states).

pub mod memory;
pub mod sync;
pub mod tree;
