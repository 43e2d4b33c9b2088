//! Certified registry reads from an NNS subnet: the page and its check are the registry
//! crate's (`registry::page`, so that readers linking no replica check them); this node
//! serves them (`driver`, `http`).

pub use registry::page::*;
