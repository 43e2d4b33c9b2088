//! One node of one subnet at one version: QUIC transport, the consensus driver,
//! deterministic execution, RocksDB state, certification, checkpoints and the HTTP API.
//!
//! Status: not built yet (issue 5).
