//! The node's supervisor: registry replication, CUP collection, the version decision,
//! release downloads and the switch to a new version by re-executing itself.
//!
//! - [`config`]: `node.toml`, validated.
//! - [`decide`]: the decision as a pure function of the local CUP, peers' CUPs and the
//!   registry copy, with its rules in the module docs.
//! - [`node`]: the loop around it ([`node::Orchestrator`]): replicate, collect, decide, act.
//! - [`peers`]: asking peers for CUPs beside the loop, each answer bounded and verified.
//! - [`fetch`]: downloading and unpacking a release beside the loop.
//! - [`switch`]: the new release's rehearsal and the re-execution into it.
//! - [`process`]: the replica process (process group, SIGTERM then SIGKILL, backoff).
//! - [`server`]: `GET /status`, `GET /metrics`, `POST /_/catch_up_package` (the CUP
//!   exchange's rules are in its docs), with [`ratelimit`]'s budgets.

pub mod config;
pub mod decide;
pub mod fetch;
pub mod node;
pub mod peers;
pub mod process;
pub mod ratelimit;
pub mod server;
pub mod switch;
