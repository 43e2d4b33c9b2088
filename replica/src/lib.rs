//! One node of one subnet at one version: QUIC transport, the consensus driver,
//! deterministic execution, RocksDB state, certification, checkpoints and the HTTP API.
//!
//! - [`node_dir`]: the node directory's layout, keys and CUP files.
//! - [`ingress`]: signed updates (sender key, nonce, expiry, operation), the bounded
//!   ingress pool, and block payloads.
//! - [`state`]: the replicated key/value state on RocksDB, replay protection, the Merkle
//!   state tree and its witnesses, schema versions, checkpoints, restore, and state-sync
//!   manifests and chunks.
//! - [`certified`]: query answers and `verify_read`, which checks an answer's witness and
//!   certificate with the subnet's public key alone.
//! - [`pool_store`]: this node's own shares, persisted before they are sent.
//! - [`preflight`]: the rehearsal of a migration on a hard-link copy of a checkpoint.
//! - [`start`]: from a CUP to a running core: checks, state restore, keys.
//! - [`driver`]: the one place where the consensus core's actions become effects.
//! - [`http`]: the public API (`/api/v1/*`, `/metrics`) and state sync for peers;
//!   [`metrics`]: what `/metrics` reports, on one Prometheus registry.
//! - [`requests`]: what became of an update (executed, certified), for
//!   `/api/v1/request_status`.
//! - [`sync`]: fetching a checkpoint from peers, its manifest verified against a CUP
//!   and each chunk against the manifest.
//! - [`wire`]: this release's encoding of consensus artifacts and its QUIC protocol name.
//! - [`compat`]: this release's golden fixtures of every format that crosses an upgrade,
//!   and how it reads them.
//! - [`cli`]: the `replica` command.
//!
//! The `next-release` feature builds the next release from the same sources (the
//! `replica-next` package turns it on): state schema 2 with its migration, the `append`
//! method, and another artifact encoding on another QUIC protocol.

pub mod certified;
pub mod cli;
pub mod client;
pub mod compat;
pub mod driver;
pub mod http;
pub mod ingress;
pub mod metrics;
pub mod node_dir;
pub mod pool_store;
pub mod preflight;
pub mod registry_page;
pub mod requests;
pub mod start;
pub mod state;
pub mod sync;
pub mod wire;

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
    /// Storage cannot be written now (a full disk): the driver waits for it.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    #[error("{0}")]
    Refused(String),
    /// No peer could serve the state at a CUP (each refused, or lacked it: a peer keeps
    /// only its newest checkpoints). A later try, or a newer CUP, may succeed.
    #[error("{0}")]
    StateSyncFailed(String),
}

pub use wire::WIRE_PROTOCOL;

/// What this build is: the first release or the next one (the `next-release` feature).
#[cfg(not(feature = "next-release"))]
pub const RELEASE: &str = "first";
/// What this build is: the first release or the next one (the `next-release` feature).
#[cfg(feature = "next-release")]
pub const RELEASE: &str = "next";

/// The two clocks the consensus core reads: monotonic ns since this process first asked
/// (its deadlines; never steps) and wall-clock ns since the Unix epoch (block times).
pub fn clocks() -> consensus::Now {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    consensus::Now {
        mono_ns: start.elapsed().as_nanos() as u64,
        wall_ns: now_ns(),
    }
}

/// Wall-clock time in ns since the Unix epoch (block times, ingress expiry, reports).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
