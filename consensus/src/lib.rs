//! The Internet Computer consensus protocol as a pure state machine: blocks, random
//! beacon, notarization, finalization, certification, CUPs, and the upgrade rule.
//!
//! - [`core`]: [`Consensus`], one node's state machine; the protocol is specified in its
//!   module docs.
//! - [`status`]: the upgrade (halting) rule, a small pure function.
//! - [`artifact`]: blocks and the artifacts nodes exchange, with what each signature covers.
//! - [`crypto`]: the signatures consensus needs, behind [`ConsensusCrypto`], and the real
//!   implementation.
//! - [`resharing`]: the resharing of a subnet's key to a new committee, as pure functions
//!   (issue 18; not yet driven by the core).
//!
//! Architecture invariant: this crate does no I/O, reads no clock and draws no randomness
//! of its own; `cargo tree -p consensus` shows no tokio (checked by a test).

pub mod artifact;
pub mod core;
pub mod crypto;
pub mod resharing;
pub mod status;

pub use crate::core::{
    Action, Base, BrokenRule, Config, ConfigError, Consensus, Delivery, Event, Now, Stats,
};
pub use crate::crypto::{ConsensusCrypto, RealCrypto, Threshold};
pub use crate::status::{Member, Resharing, Status, SubnetInfo};
