//! The registry: the single source of truth for what every node must run.
//!
//! - [`store`]: the versioned key/value store (its laws are in its docs), in memory and on
//!   RocksDB.
//! - [`records`]: typed records and their keys, in one module.
//! - [`invariants`]: what must hold of the whole registry after every batch.
//! - [`governance`]: proposals, votes and adoption, a pure state machine.
//! - [`service`]: [`Registry`], the three together with atomic persistence.
//! - [`genesis`]: the genesis file and a generator of whole networks.
//! - [`api`], [`server`], [`client`]: the HTTP API with signed responses; [`exit`]: the
//!   exit codes of the command-line tools; [`nns_node`]: governance calls sent as ingress
//!   to a node of an NNS subnet (issue 19); [`nns_source`]: certified reads of the registry
//!   and governance from NNS nodes, for every reader; [`follow`]: a registry server that
//!   follows the NNS subnet (a verifying cache for tools).
//! - [`page`]: a certified page of the registry's changes from an NNS subnet's node, and
//!   its check with the NNS subnet's key (issue 19).
//! - [`replicator`]: the node side, into a node-local store; [`local`]: reads of it
//!   (a subnet at a version, the registry CUP).
//! - [`logging`], [`metrics`] and [`shutdown`]: what every node-side binary shares (the
//!   log setup, `/metrics` on one Prometheus registry per process, and waiting for
//!   SIGTERM or Ctrl-C).
//!
//! Without the default feature `io` (RocksDB, HTTP, the replicator, the binaries) the crate
//! is its pure core: the simulator builds on that.
//!
//! Binaries: `registry` (init, serve) and `nns` (governance from the command line).

pub mod api;
#[cfg(feature = "io")]
pub mod client;
#[cfg(feature = "io")]
pub mod exit;
#[cfg(feature = "io")]
pub mod follow;
pub mod genesis;
pub mod governance;
pub mod invariants;
pub mod local;
#[cfg(feature = "io")]
pub mod logging;
#[cfg(feature = "io")]
pub mod metrics;
#[cfg(feature = "io")]
pub mod nns_node;
#[cfg(feature = "io")]
pub mod nns_source;
pub mod page;
pub mod records;
#[cfg(feature = "io")]
pub mod replicator;
#[cfg(feature = "io")]
pub mod server;
pub mod service;
#[cfg(feature = "io")]
pub mod shutdown;
pub mod store;

pub use service::{Registry, RegistryError, Warm};

#[cfg(test)]
#[cfg(feature = "io")]
mod service_tests;
