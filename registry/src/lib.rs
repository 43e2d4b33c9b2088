//! The registry: the single source of truth for what every node must run.
//!
//! - [`store`]: the versioned key/value store (its laws are in its docs), in memory and on
//!   RocksDB.
//! - [`records`]: typed records and their keys, in one module.
//! - [`invariants`]: what must hold of the whole registry after every batch.
//! - [`governance`]: proposals, votes and adoption, a pure state machine.
//! - [`service`]: [`Registry`], the three together with atomic persistence.
//! - [`genesis`]: the genesis file and a generator of whole networks.
//! - [`api`], [`server`], [`client`]: the HTTP API with signed responses.
//! - [`replicator`]: the node side, into a node-local store; [`local`]: reads of it
//!   (a subnet at a version, the registry CUP).
//! - [`logging`] and [`shutdown`]: what every node-side binary shares (the log setup, and
//!   waiting for SIGTERM or Ctrl-C).
//!
//! Binaries: `registry` (init, serve) and `nns` (governance from the command line).

pub mod api;
pub mod client;
pub mod genesis;
pub mod governance;
pub mod invariants;
pub mod local;
pub mod logging;
pub mod records;
pub mod replicator;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;

pub use service::{Registry, RegistryError};

#[cfg(test)]
mod service_tests;
