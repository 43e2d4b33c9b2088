use crate::{ParseError, domain::Domain, parse_hex32};
use sha2::{Digest, Sha256};
use std::{fmt, str::FromStr};

/// A SHA-256 digest. Protocol hashes are always computed with a domain tag
/// ([`CryptoHash::of`]); [`CryptoHash::sha256`] is for plain file digests (release packages).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CryptoHash(pub [u8; 32]);

crate::hex_serde!(CryptoHash);

impl CryptoHash {
    /// `SHA-256(domain.frame(bytes))`.
    pub fn of(domain: Domain, bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        let tag = domain.as_str().as_bytes();
        h.update([tag.len() as u8]);
        h.update(tag);
        h.update(bytes);
        Self(h.finalize().into())
    }

    /// `SHA-256(domain.frame(parts concatenated))`, without building the concatenation
    /// (the state tree hashes values of up to 64 KiB with a prefix).
    pub fn of_parts(domain: Domain, parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        let tag = domain.as_str().as_bytes();
        h.update([tag.len() as u8]);
        h.update(tag);
        for p in parts {
            h.update(p);
        }
        Self(h.finalize().into())
    }

    /// Plain SHA-256, without a domain (for files whose hash is published elsewhere).
    pub fn sha256(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for CryptoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CryptoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CryptoHash({})", self.to_hex())
    }
}

impl FromStr for CryptoHash {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain;

    #[test]
    fn sha256_matches_the_known_answer_for_abc() {
        assert_eq!(
            CryptoHash::sha256(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn domain_hash_equals_sha256_of_the_frame() {
        let d = domain::STATE_HASH;
        assert_eq!(
            CryptoHash::of(d, b"xyz"),
            CryptoHash::sha256(&d.frame(b"xyz"))
        );
        assert_ne!(
            CryptoHash::of(d, b"xyz"),
            CryptoHash::of(domain::BLOCK_HASH, b"xyz")
        );
    }

    #[test]
    fn hashing_parts_equals_hashing_their_concatenation() {
        let d = domain::STATE_TREE_LEAF;
        assert_eq!(
            CryptoHash::of_parts(d, &[b"x", b"", b"yz"]),
            CryptoHash::of(d, b"xyz")
        );
        assert_eq!(CryptoHash::of_parts(d, &[]), CryptoHash::of(d, b""));
    }

    #[test]
    fn display_and_from_str_round_trip_and_reject_bad_text() {
        let h = CryptoHash::sha256(b"x");
        assert_eq!(h.to_string().parse::<CryptoHash>(), Ok(h));
        assert!(matches!(
            "ab".parse::<CryptoHash>(),
            Err(ParseError::HexLength { .. })
        ));
        assert!(matches!(
            "z".repeat(64).parse::<CryptoHash>(),
            Err(ParseError::NotHex(_))
        ));
    }
}
