//! The catch-up package (CUP): the signed statement "at height `h` the subnet's state had
//! hash `H`, the summary block was `B`, the random beacon was `R`, and registry version
//! `r` applies from here", which carries a subnet across restarts and upgrades.
//!
//! # Encoding (normative)
//!
//! *Content* = `"CUPC"`, format byte `1`, then an extensible record
//! ([`types::codec::FieldsWriter`]): fields `(tag u16, length u32, value)` in strictly
//! ascending tag order, each value in the canonical codec. Tags 1–9 are the fields of
//! [`CupContent`]; a reader keeps fields it does not know in
//! [`CupContent::extensions`] and writes them back unchanged. So a release may add a
//! field (as an optional one) and both older and newer releases decode, verify and
//! re-encode each other's CUPs. A field is never removed or re-purposed; its tag is
//! retired instead.
//!
//! *Signature*: the high-threshold (n − f) BLS signature of the subnet over
//! `(CUP_CONTENT, content bytes)`: the exact bytes, so verification needs no knowledge of
//! the fields.
//!
//! *File / wire envelope* = `"CUP\0"`, format byte `1`, a record with field 1 = kind
//! (1 signed, 2 genesis, 3 recovery), 2 = content bytes, 3 = signature (only for signed),
//! then a 32-byte checksum (SHA-256 with the `CUP_FILE_CHECKSUM` domain) of everything
//! before it, so that a corrupted file is reported as corrupt even without a subnet key.
//! At most [`MAX_CUP_BYTES`].
//!
//! # Kinds
//!
//! A [`SignedCup`] is made by consensus at a summary height and verified with the subnet
//! key. A [`RegistryCup`] (genesis or recovery) is unsigned: it is built from registry
//! contents and trusted only because the registry is; never accept one from a peer
//! ([`SignedCup::decode`] refuses them).
//!
//! # Order
//!
//! CUPs are ordered by [`CupParam`] `(height, registry version)` as a partial order: `a <
//! b` iff `a.height < b.height` and `a.registry_version <= b.registry_version`, or the
//! heights are equal and `a.registry_version < b.registry_version` (how a recovery CUP at
//! the same height wins). [`choose_highest`] picks among valid candidates.

mod content;
mod package;

pub use content::{CupCommittee, CupContent, DealtKeys, RandomBeacon};
pub use package::{
    Cup, CupError, CupParam, MAX_CUP_BYTES, RegistryCup, RegistryCupKind, SignedCup,
    choose_highest, choose_highest_by,
};
