//! The Internet Computer consensus protocol as a pure state machine.
//!
//! Status: not built yet (issue 4). Architecture invariant, already enforced by a test in
//! the `tests` crate: this crate does no I/O, reads no clock and draws no randomness of its
//! own. `cargo tree -p consensus` shows no tokio, quinn or rocksdb.
