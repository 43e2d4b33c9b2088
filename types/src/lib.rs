//! Protocol quantities shared by every crate: ids, heights, versions and hashes as
//! newtypes, the signature/hash domain tags, and the one canonical codec.
//!
//! Every type here has a `Display` and a `FromStr` that round-trip, so ids and versions
//! can be passed on command lines and in JSON as strings without a second format.

pub mod codec;
pub mod domain;
mod hash;
mod ids;
mod version;

pub use hash::CryptoHash;
pub use ids::{NetworkId, NodeId, SubnetId};
pub use version::{Height, RegistryVersion, ReplicaVersion, ReplicaVersionError};

/// Parsing an id, hash or number from text failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expected {expected_chars} hex characters, got {got_chars}")]
    HexLength {
        expected_chars: usize,
        got_chars: usize,
    },
    #[error("not hexadecimal: {0}")]
    NotHex(String),
    #[error("not a non-negative integer: {0:?}")]
    NotANumber(String),
}

/// Serde for 32-byte newtypes: lowercase hex text in human-readable formats (JSON), the
/// raw 32 bytes in binary ones (the same bytes a derived implementation writes).
#[doc(hidden)]
#[macro_export]
macro_rules! hex_serde {
    ($name:ident) => {
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&::hex::encode(self.0))
                } else {
                    s.serialize_newtype_struct(stringify!($name), &self.0)
                }
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let text = <String as ::serde::Deserialize>::deserialize(d)?;
                    text.parse().map_err(::serde::de::Error::custom)
                } else {
                    <[u8; 32] as ::serde::Deserialize>::deserialize(d).map(Self)
                }
            }
        }
    };
}

pub(crate) fn parse_hex32(text: &str) -> Result<[u8; 32], ParseError> {
    if text.len() != 64 {
        return Err(ParseError::HexLength {
            expected_chars: 64,
            got_chars: text.len(),
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|e| ParseError::NotHex(e.to_string()))?;
    Ok(out)
}

/// The root of the state tree of a state with no entries (`replica::state::tree`: 2^16
/// empty buckets under a complete binary tree). The replica's tests compute it and check
/// it against these bytes.
pub const EMPTY_STATE_ROOT: CryptoHash = CryptoHash([
    0x50, 0xe1, 0x65, 0x26, 0x4c, 0xe3, 0xfa, 0xa1, 0xc6, 0xf8, 0x0f, 0x8e, 0xa7, 0x85, 0x6a, 0x63,
    0x77, 0xf9, 0x80, 0xdb, 0x7c, 0x40, 0x58, 0x69, 0x31, 0xc7, 0x02, 0x9d, 0x3d, 0x90, 0x6d, 0xb5,
]);

/// The hash of the empty replicated state at height 0: what a genesis CUP carries.
///
/// The replica's state hash at height `h` is `H(STATE_HASH, encode((h, root)))` with
/// `root` the root of its Merkle state tree; empty means [`EMPTY_STATE_ROOT`].
/// (`replica::state` has a test that a fresh state hashes to this.)
pub fn empty_state_hash() -> CryptoHash {
    CryptoHash::of(
        domain::STATE_HASH,
        &codec::encode(&(Height::ZERO, EMPTY_STATE_ROOT)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_state_hash_is_pinned() {
        // A change here is a change of the genesis state hash every network starts from.
        assert_eq!(
            empty_state_hash().to_hex(),
            "797d9111e0104c2d93cf6881e73ee085f70a53ff96ce4ad246b09eb66eb725af"
        );
    }
}
