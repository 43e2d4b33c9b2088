//! The registry: the single source of truth for what every node must run.
//!
//! Status: not built yet (issue 3). This crate will hold the versioned store (in memory
//! and on RocksDB, behind one trait whose laws are property-tested), the typed records
//! and their keys, the invariants checked after every mutation batch, governance
//! (neurons, proposals, votes; a pure state machine), the registry server and the
//! node-side replicator.
