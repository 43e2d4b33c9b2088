//! Certified registry reads from an NNS subnet: the page and its check are the
//! `certification` crate's (so that readers linking no replica check them); this node
//! serves them (`driver`, `http`).

pub use certification::registry_page::*;
