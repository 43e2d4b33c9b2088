//! One node of one subnet at one version: QUIC transport, the consensus driver,
//! deterministic execution, RocksDB state, certification, checkpoints and the HTTP API.
//!
//! Built so far (issue 5 is open):
//! - [`ingress`]: signed updates (sender key, nonce, expiry, operation), the bounded
//!   ingress pool, and block payloads.
//! - [`state`]: the replicated key/value state on RocksDB, replay protection, the
//!   incremental state hash, schema versions, checkpoints.

pub mod ingress;
pub mod state;
