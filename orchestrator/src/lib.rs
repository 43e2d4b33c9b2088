//! The node's supervisor: registry replication, CUP collection, the version decision,
//! release downloads and the switch to a new version by re-executing itself.
//!
//! - [`config`]: `node.toml`, validated.
//! - [`decide`]: the decision as a pure function of the local CUP, peers' CUPs and the
//!   registry copy, with its rules in the module docs.
//! - [`node`]: the loop around it ([`node::Orchestrator`]): replicate, collect, decide, act.
//! - [`process`]: the replica process (process group, SIGTERM then SIGKILL, backoff).
//! - [`server`]: `GET /status`, `GET /metrics`, `POST /_/catch_up_package`.

pub mod config;
pub mod decide;
pub mod node;
pub mod process;
pub mod server;
