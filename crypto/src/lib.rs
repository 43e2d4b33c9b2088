//! Cryptography on audited libraries only (blst, ed25519-dalek); no curve arithmetic of our
//! own beyond calling blst's field and group operations for Shamir sharing and Lagrange
//! interpolation.
//!
//! - [`ed25519`]: node, neuron and user keys; strict verification.
//! - [`bls`]: BLS12-381 signatures (public keys in G1, signatures in G2: blst's `min_pk`,
//!   the proof-of-possession ciphersuite), multi-signature aggregation for notarization
//!   and finalization, and the raw IETF/Ethereum operations that the official test vectors
//!   exercise.
//! - [`threshold`]: a trusted dealer that Shamir-shares a fresh subnet key, signature
//!   shares, and combination of any `t` shares into the unique group signature.
//! - [`hashed`]: signing and checking on a message hashed to G2 once, and a small store
//!   of recent hashes (a node signs and checks each consensus message).
//! - [`key_file`]: secret keys on disk, hex, mode 0600, checked on read.
//!
//! Every signature is over `(domain tag, bytes)`; the tags are in [`types::domain`].
//!
//! Why `min_pk` rather than the Internet Computer's `min_sig`: the official test vectors
//! are `min_pk` with the POP ciphersuite, so running them exercises exactly the functions
//! the protocol calls, not a sibling variant. The cost is a 96-byte signature instead of 48.

pub mod bls;
pub mod ed25519;
pub mod hashed;
pub mod key_file;
pub mod reshare;
mod scalar;
pub mod threshold;

pub use types::domain::{self, Domain};

/// A cryptographic check failed, or key material did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("invalid {what} signature")]
    InvalidSignature { what: &'static str },
    #[error("invalid proof of possession")]
    InvalidProofOfPossession,
    #[error("nothing to aggregate")]
    Empty,
    #[error("signer {0} appears twice")]
    DuplicateSigner(u32),
    #[error("signer index {index} is out of range (subnet of {n})")]
    UnknownSigner { index: u32, n: usize },
    #[error("need {needed} distinct signature shares, got {got}")]
    NotEnoughShares { needed: usize, got: usize },
    #[error("threshold {t} is invalid for {n} participants (need 1 <= t <= n)")]
    InvalidThreshold { n: usize, t: usize },
}

/// Serde for fixed-size byte newtypes: hex text in human-readable formats (JSON), raw
/// bytes in binary ones (the canonical codec).
pub(crate) mod bytes_serde {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            s.serialize_bytes(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            hex::decode(text).map_err(D::Error::custom)
        } else {
            serde_bytes_vec(d)
        }
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}
