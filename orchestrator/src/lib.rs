//! The node's supervisor: registry replication, CUP collection, the version decision,
//! release downloads and the switch to a new version by re-executing itself.
//!
//! Status: not built yet (issue 6).
