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

/// The hash of the empty replicated state at height 0: what a genesis CUP carries.
///
/// The replica's state hash at height `h` is `H(STATE_HASH, encode((h, accumulator)))`
/// with a 256-bit additive accumulator over the entries; empty means a zero accumulator.
/// (`replica::state` has a test that a fresh state hashes to this.)
pub fn empty_state_hash() -> CryptoHash {
    CryptoHash::of(
        domain::STATE_HASH,
        &codec::encode(&(Height::ZERO, [0u8; 32])),
    )
}
