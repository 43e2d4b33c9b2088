//! The node's supervisor: registry replication, CUP collection, the version decision,
//! release downloads and the switch to a new version by re-executing itself.
//!
//! Without the default feature `io` the crate is [`decide`] and [`upgrade`] alone (the
//! simulator's use).
//!
//! - [`config`]: `node.toml`, validated.
//! - [`decide`]: the decision as a pure function of the local CUP, peers' CUPs and the
//!   registry copy, with its rules in the module docs.
//! - [`upgrade`]: the upgrade as a typed state machine, pure like `decide`: (time,
//!   decision, what the effects reported) to a phase and the effects to carry out.
//! - [`node`]: the loop around them ([`node::Orchestrator`]): replicate, collect, decide,
//!   step the machine, carry its effects out.
//! - [`sources`]: where the registry copy comes from: registry servers, or the NNS
//!   subnet's nodes (`node.toml`'s, then those the copy names), every page checked.
//! - [`peers`]: asking peers for CUPs beside the loop, each answer bounded and verified.
//! - [`fetch`]: downloading and unpacking a release beside the loop.
//! - [`notify`]: a JSON event per upgrade step to `node.toml`'s webhooks, never blocking.
//! - [`preflight`]: the deployed release rehearsed beside the loop before any halt, and
//!   this node's readiness for it, which the replica gossips.
//! - [`switch`]: the new release's rehearsal and the re-execution into it.
//! - [`handover`]: the replica's wake-up when it wrote a CUP, and the last switch's
//!   stages timed for `/status`.
//! - [`process`]: the replica process (process group, SIGTERM then SIGKILL, backoff).
//! - [`server`]: `GET /status`, `GET /metrics`, `POST /_/catch_up_package` (the CUP
//!   exchange's rules are in its docs), with [`ratelimit`]'s budgets; [`metrics`]: what
//!   `/metrics` reports, on one Prometheus registry.

#[cfg(feature = "io")]
pub mod config;
pub mod decide;
// Pure like `decide`: the simulator drives the same transitions.
#[cfg(feature = "io")]
pub mod fetch;
#[cfg(feature = "io")]
pub mod handover;
#[cfg(feature = "io")]
pub mod joining;
#[cfg(feature = "io")]
pub mod metrics;
#[cfg(feature = "io")]
#[cfg(feature = "io")]
pub mod node;
#[cfg(feature = "io")]
pub mod notify;
#[cfg(feature = "io")]
pub mod peers;
#[cfg(feature = "io")]
pub mod preflight;
#[cfg(feature = "io")]
pub mod process;
#[cfg(feature = "io")]
pub mod ratelimit;
#[cfg(feature = "io")]
pub mod server;
#[cfg(feature = "io")]
pub mod sources;
#[cfg(feature = "io")]
pub mod switch;
pub mod upgrade;
