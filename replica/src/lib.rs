//! One node of one subnet at one version: QUIC transport, the consensus driver,
//! deterministic execution, RocksDB state, certification, checkpoints and the HTTP API.
//!
//! - [`node_dir`]: the node directory's layout, keys and CUP files.
//! - [`ingress`]: signed updates (sender key, nonce, expiry, operation), the bounded
//!   ingress pool, and block payloads.
//! - [`state`]: the replicated key/value state on RocksDB, replay protection, the
//!   incremental state hash, schema versions, checkpoints, restore.
//! - [`pool_store`]: this node's own shares, persisted before they are sent.
//! - [`start`]: from a CUP to a running core: checks, state restore, keys.
//! - [`driver`]: the one place where the consensus core's actions become effects.
//! - [`http`]: the public API (`/api/v1/*`, `/metrics`) and state sync for peers.
//! - [`sync`]: fetching a checkpoint from peers, verified against a CUP.

pub mod driver;
pub mod http;
pub mod ingress;
pub mod node_dir;
pub mod pool_store;
pub mod start;
pub mod state;
pub mod sync;

/// Why the replica could not start or had to stop. Each names what to look at.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("node directory: {path}: {reason}")]
    NodeDir { path: String, reason: String },
    #[error("CUP {path}: {reason}")]
    Cup { path: String, reason: String },
    #[error("registry: {0}")]
    Registry(String),
    #[error("state: {0}")]
    State(#[from] state::StateError),
    #[error("consensus pool storage: {0}")]
    Pool(#[from] rocksdb::Error),
    #[error("transport: {0}")]
    Transport(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Refused(String),
}

/// The consensus wire protocol (the QUIC ALPN): peers speaking another one do not connect.
/// Replica versions share it; each envelope also carries its replica version.
pub const WIRE_PROTOCOL: &str = "icup-consensus/1";

/// Wall-clock time in ns since the Unix epoch: the driver's only clock.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
