//! The node's supervisor: registry replication, CUP collection, the version decision,
//! release downloads and the switch to a new version by re-executing itself.
//!
//! - [`decide`]: the decision as a pure function of the local CUP, peers' CUPs and the
//!   registry copy, with its rules in the module docs.
//!
//! Status: issue 6 is open; the decision is built, the process around it is not.

pub mod decide;
