//! ed25519 keys for nodes, neuron controllers and users. Verification is always
//! `verify_strict` (no small-order keys, no non-canonical signatures), so every honest
//! node accepts exactly the same signatures.

use crate::{CryptoError, key_file};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{cell::RefCell, collections::HashMap, fmt, path::Path, str::FromStr};
use types::{NodeId, domain::Domain};

/// An ed25519 secret key.
pub struct Ed25519KeyPair(SigningKey);

/// An ed25519 public key (32 bytes). Parsing checks that it is a valid curve point.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ed25519PublicKey([u8; 32]);

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ed25519Signature(pub [u8; 64]);

impl Ed25519KeyPair {
    pub fn generate<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(&seed)
    }

    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> Ed25519PublicKey {
        Ed25519PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn node_id(&self) -> NodeId {
        self.public_key().node_id()
    }

    pub fn sign(&self, domain: Domain, bytes: &[u8]) -> Ed25519Signature {
        Ed25519Signature(self.0.sign(&domain.frame(bytes)).to_bytes())
    }

    /// The key as a PKCS#8 v2 document (RFC 8410 and RFC 5958: secret and public key), DER.
    /// This is how the transport hands the node's registry key to TLS (its certificate is
    /// made from, and signs with, this very key).
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let document = self.0.to_pkcs8_der().map_err(|e| CryptoError::Malformed {
            what: "ed25519 PKCS#8 encoding",
            reason: e.to_string(),
        })?;
        Ok(document.as_bytes().to_vec())
    }

    /// Writes the key to `path` (hex, mode 0600).
    pub fn write_to_file(&self, path: &Path) -> Result<(), key_file::KeyFileError> {
        key_file::write(path, &self.seed())
    }

    /// Reads a key written by [`Self::write_to_file`], refusing bad permissions or contents.
    pub fn read_from_file(path: &Path) -> Result<Self, key_file::KeyFileError> {
        let bytes = key_file::read(path, 32)?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes);
        Ok(Self::from_seed(&seed))
    }
}

impl fmt::Debug for Ed25519KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519KeyPair(public {})", self.public_key())
    }
}

/// The most decompressed keys one thread remembers; emptied when full, so memory stays
/// under a megabyte whatever keys a peer sends.
const MAX_CACHED_KEYS: usize = 4096;

thread_local! {
    /// Decompressed keys by their bytes. Decompressing is about a tenth of a
    /// verification, and a replica meets each user's key at every update: when it parses
    /// one (several times per node, in the update and in blocks) and when it verifies
    /// one. A key's point is the same whenever it is computed, so this changes no answer.
    static KEYS: RefCell<HashMap<[u8; 32], VerifyingKey>> = RefCell::new(HashMap::new());
}

/// `bytes` as a point on the curve (refused if not one), remembered per thread.
fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, ed25519_dalek::SignatureError> {
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some(k) = keys.get(bytes) {
            return Ok(*k);
        }
        let k = VerifyingKey::from_bytes(bytes)?;
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(*bytes, k);
        Ok(k)
    })
}

impl Ed25519PublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Malformed {
            what: "ed25519 public key",
            reason: format!("expected 32 bytes, got {}", bytes.len()),
        })?;
        verifying_key(&arr).map_err(|e| CryptoError::Malformed {
            what: "ed25519 public key",
            reason: e.to_string(),
        })?;
        Ok(Self(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn node_id(&self) -> NodeId {
        NodeId::from_ed25519_public_key(&self.0)
    }

    /// Strict verification of `signature` over `(domain, bytes)`.
    pub fn verify(
        &self,
        domain: Domain,
        bytes: &[u8],
        signature: &Ed25519Signature,
    ) -> Result<(), CryptoError> {
        let invalid = CryptoError::InvalidSignature { what: "ed25519" };
        let key = verifying_key(&self.0).map_err(|_| invalid.clone())?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&domain.frame(bytes), &sig)
            .map_err(|_| invalid)
    }
}

impl fmt::Display for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519PublicKey({})", hex::encode(&self.0[..4]))
    }
}

impl FromStr for Ed25519PublicKey {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|e| CryptoError::Malformed {
            what: "ed25519 public key",
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for Ed25519PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::bytes_serde::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Ed25519PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::bytes_serde::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

impl Ed25519Signature {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| CryptoError::Malformed {
                what: "ed25519 signature",
                reason: format!("expected 64 bytes, got {}", bytes.len()),
            })
    }
}

impl fmt::Debug for Ed25519Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Signature({}…)", hex::encode(&self.0[..4]))
    }
}

impl fmt::Display for Ed25519Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for Ed25519Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::bytes_serde::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Ed25519Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::bytes_serde::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use types::domain;

    fn key(seed: u64) -> Ed25519KeyPair {
        Ed25519KeyPair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed))
    }

    #[test]
    fn remembered_keys_change_no_answer() {
        // Not a point: refused every time (nothing is remembered for it).
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        for _ in 0..2 {
            assert!(Ed25519PublicKey::from_bytes(&not_a_point).is_err());
        }
        let k = key(7);
        let sig = k.sign(domain::INGRESS, b"m");
        // More keys than a thread remembers, so this one is forgotten and decompressed
        // again along the way.
        for i in 0..(MAX_CACHED_KEYS as u64 + 10) {
            let pk = key(1000 + i).public_key();
            assert_eq!(Ed25519PublicKey::from_bytes(pk.as_bytes()), Ok(pk));
            if i % 1000 == 0 {
                assert_eq!(k.public_key().verify(domain::INGRESS, b"m", &sig), Ok(()));
                assert!(k.public_key().verify(domain::INGRESS, b"n", &sig).is_err());
            }
        }
        KEYS.with(|keys| assert!(keys.borrow().len() <= MAX_CACHED_KEYS));
    }

    #[test]
    fn sign_verify_and_domain_separation() {
        let k = key(1);
        let sig = k.sign(domain::INGRESS, b"hello");
        assert_eq!(
            k.public_key().verify(domain::INGRESS, b"hello", &sig),
            Ok(())
        );
        assert!(
            k.public_key()
                .verify(domain::INGRESS, b"hellO", &sig)
                .is_err()
        );
        assert!(
            k.public_key()
                .verify(domain::GOVERNANCE_VOTE, b"hello", &sig)
                .is_err()
        );
        assert!(
            key(2)
                .public_key()
                .verify(domain::INGRESS, b"hello", &sig)
                .is_err()
        );
    }

    #[test]
    fn rfc8032_test_vector_1_public_key() {
        // RFC 8032 section 7.1, TEST 1: the secret key and its public key.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .expect("hex")
                .try_into()
                .expect("32");
        assert_eq!(
            Ed25519KeyPair::from_seed(&seed).public_key().to_string(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn strict_verification_rejects_a_small_order_key() {
        // The identity point (y = 1) is a small-order key: a weak key that `verify` (non
        // strict) could accept for crafted signatures; strict verification never does.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let pk = Ed25519PublicKey::from_bytes(&identity).expect("it is a valid point");
        let mut sig = [0u8; 64];
        sig[0] = 1; // R = identity, s = 0
        assert!(
            pk.verify(domain::INGRESS, b"", &Ed25519Signature(sig))
                .is_err()
        );
    }

    #[test]
    fn key_file_round_trip_and_node_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let k = key(3);
        k.write_to_file(&path).expect("write");
        let back = Ed25519KeyPair::read_from_file(&path).expect("read");
        assert_eq!(back.public_key(), k.public_key());
        assert_eq!(
            back.node_id(),
            NodeId::from_ed25519_public_key(k.public_key().as_bytes())
        );
    }

    #[test]
    fn pkcs8_export_round_trips_and_carries_the_public_key() {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let k = key(5);
        let der = k.to_pkcs8_der().expect("encode");
        let back = SigningKey::from_pkcs8_der(&der).expect("decode");
        assert_eq!(back.to_bytes(), k.seed());
        // v2 (OneAsymmetricKey) ends with the public key as its last 32 bytes.
        assert_eq!(&der[der.len() - 32..], k.public_key().as_bytes());
    }

    #[test]
    fn public_key_text_and_malformed_inputs() {
        let pk = key(4).public_key();
        assert_eq!(pk.to_string().parse::<Ed25519PublicKey>(), Ok(pk));
        assert!("abcd".parse::<Ed25519PublicKey>().is_err());
        assert!(Ed25519Signature::from_bytes(&[0; 63]).is_err());
    }
}
