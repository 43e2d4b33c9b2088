//! BLS12-381 signatures: public keys in G1 (48 bytes), signatures in G2 (96 bytes), the
//! IETF proof-of-possession ciphersuite.
//!
//! Multi-signatures (notarization, finalization) aggregate the signers' signatures on one
//! message; the verifier aggregates the signers' public keys. That is safe against
//! rogue-key attacks only because every public key entering an aggregate has had its
//! proof of possession checked (the registry refuses a node record without a valid one).
//!
//! The `raw_*` functions are the IETF/Ethereum operations over bare messages; the typed
//! API is a thin layer over them that adds the domain tag, so the official test vectors
//! run through the same code the protocol uses.

use crate::CryptoError;
use blst::{
    BLST_ERROR, blst_p1_affine, blst_p2_affine,
    min_pk::{AggregatePublicKey, AggregateSignature, PublicKey, SecretKey, Signature},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{collections::BTreeSet, fmt, str::FromStr};
use types::domain::Domain;

/// Hash-to-curve domain for signatures (the ciphersuite's own DST; our domain tags are
/// inside the message).
pub const DST_SIGNATURE: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Hash-to-curve domain for proofs of possession.
pub const DST_POP: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

pub const PUBLIC_KEY_BYTES: usize = 48;
pub const SIGNATURE_BYTES: usize = 96;
pub const SECRET_KEY_BYTES: usize = 32;

/// A BLS secret key.
#[derive(Clone)]
pub struct BlsSecretKey(pub(crate) SecretKey);

/// A validated BLS public key: on the curve, in the subgroup, not the identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlsPublicKey(PublicKey);

/// A BLS signature: on the curve, in the subgroup, not the identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlsSignature(Signature);

/// A proof that the holder of a public key knows its secret key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ProofOfPossession(pub BlsSignature);

fn malformed(what: &'static str, e: BLST_ERROR) -> CryptoError {
    CryptoError::Malformed {
        what,
        reason: format!("{e:?}"),
    }
}

impl BlsSecretKey {
    pub fn generate<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut ikm = [0u8; 32];
        rng.fill_bytes(&mut ikm);
        // key_gen only fails for ikm shorter than 32 bytes.
        match SecretKey::key_gen(&ikm, &[]) {
            Ok(sk) => Self(sk),
            Err(e) => unreachable!("key_gen with 32 bytes of ikm failed: {e:?}"),
        }
    }

    /// From the 32-byte big-endian scalar; refuses zero and values >= the group order.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        SecretKey::from_bytes(bytes)
            .map(Self)
            .map_err(|e| malformed("BLS secret key", e))
    }

    pub fn to_bytes(&self) -> [u8; SECRET_KEY_BYTES] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> BlsPublicKey {
        BlsPublicKey(self.0.sk_to_pk())
    }

    pub fn sign(&self, domain: Domain, bytes: &[u8]) -> BlsSignature {
        BlsSignature(self.0.sign(&domain.frame(bytes), DST_SIGNATURE, &[]))
    }

    pub fn prove_possession(&self) -> ProofOfPossession {
        let pk = self.public_key().to_bytes();
        ProofOfPossession(BlsSignature(self.0.sign(&pk, DST_POP, &[])))
    }
}

impl fmt::Debug for BlsSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlsSecretKey(public {:?})", self.public_key())
    }
}

impl BlsPublicKey {
    /// Parses and validates (KeyValidate: subgroup check, not the identity).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != PUBLIC_KEY_BYTES {
            return Err(CryptoError::Malformed {
                what: "BLS public key",
                reason: format!("expected {PUBLIC_KEY_BYTES} bytes, got {}", bytes.len()),
            });
        }
        PublicKey::key_validate(bytes)
            .map(Self)
            .map_err(|e| malformed("BLS public key", e))
    }

    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_BYTES] {
        self.0.to_bytes()
    }

    pub fn verify(
        &self,
        domain: Domain,
        bytes: &[u8],
        signature: &BlsSignature,
    ) -> Result<(), CryptoError> {
        match signature.0.verify(
            false,
            &domain.frame(bytes),
            DST_SIGNATURE,
            &[],
            &self.0,
            false,
        ) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CryptoError::InvalidSignature { what: "BLS" }),
        }
    }

    pub(crate) fn point(&self) -> blst_p1_affine {
        self.0.into()
    }

    pub fn verify_possession(&self, pop: &ProofOfPossession) -> Result<(), CryptoError> {
        match pop
            .0
            .0
            .verify(false, &self.to_bytes(), DST_POP, &[], &self.0, false)
        {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CryptoError::InvalidProofOfPossession),
        }
    }
}

impl BlsSignature {
    /// A point the caller computed in the subgroup (a signature made with a valid key).
    pub(crate) fn from_point(point: blst_p2_affine) -> Self {
        Self(point.into())
    }

    pub(crate) fn point(&self) -> blst_p2_affine {
        self.0.into()
    }

    /// Parses and validates (subgroup check, not the identity).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != SIGNATURE_BYTES {
            return Err(CryptoError::Malformed {
                what: "BLS signature",
                reason: format!("expected {SIGNATURE_BYTES} bytes, got {}", bytes.len()),
            });
        }
        Signature::sig_validate(bytes, true)
            .map(Self)
            .map_err(|e| malformed("BLS signature", e))
    }

    pub fn to_bytes(&self) -> [u8; SIGNATURE_BYTES] {
        self.0.to_bytes()
    }
}

/// Aggregates signatures on one message into a multi-signature.
pub fn aggregate(signatures: &[BlsSignature]) -> Result<BlsSignature, CryptoError> {
    let refs: Vec<&Signature> = signatures.iter().map(|s| &s.0).collect();
    // Inputs are already validated, so no group check here.
    AggregateSignature::aggregate(&refs, false)
        .map(|a| BlsSignature(a.to_signature()))
        .map_err(|_| CryptoError::Empty)
}

/// [`aggregate`] on encoded signatures, for an aggregate that is verified afterwards
/// ([`verify_aggregate`] after [`BlsSignature::from_bytes`], which checks its subgroup):
/// each is decoded once and only checked to be on the curve, and the aggregate is
/// returned encoded, unchecked. A signature off the subgroup can only make that check
/// fail (an aggregate in the subgroup that verifies is a valid multi-signature of its
/// signers, whatever its parts were); a malformed one is refused here.
pub fn aggregate_encoded(signatures: &[&[u8]]) -> Result<[u8; SIGNATURE_BYTES], CryptoError> {
    let sigs = signatures
        .iter()
        .map(|b| {
            if b.len() != SIGNATURE_BYTES {
                return Err(CryptoError::Malformed {
                    what: "BLS signature",
                    reason: format!("expected {SIGNATURE_BYTES} bytes, got {}", b.len()),
                });
            }
            Signature::from_bytes(b).map_err(|e| malformed("BLS signature", e))
        })
        .collect::<Result<Vec<Signature>, _>>()?;
    let refs: Vec<&Signature> = sigs.iter().collect();
    AggregateSignature::aggregate(&refs, false)
        .map(|a| a.to_signature().to_bytes())
        .map_err(|_| CryptoError::Empty)
}

/// Verifies a multi-signature on `(domain, bytes)` by exactly the given distinct signers.
pub fn verify_aggregate(
    signers: &[BlsPublicKey],
    domain: Domain,
    bytes: &[u8],
    signature: &BlsSignature,
) -> Result<(), CryptoError> {
    check_distinct(signers)?;
    let refs: Vec<&PublicKey> = signers.iter().map(|p| &p.0).collect();
    match signature
        .0
        .fast_aggregate_verify(false, &domain.frame(bytes), DST_SIGNATURE, &refs)
    {
        BLST_ERROR::BLST_SUCCESS => Ok(()),
        _ => Err(CryptoError::InvalidSignature {
            what: "BLS multi-signature",
        }),
    }
}

/// A multi-signature's signers: at least one, none twice.
pub(crate) fn check_distinct(signers: &[BlsPublicKey]) -> Result<(), CryptoError> {
    if signers.is_empty() {
        return Err(CryptoError::Empty);
    }
    let mut seen = BTreeSet::new();
    for (i, pk) in signers.iter().enumerate() {
        if !seen.insert(pk.to_bytes()) {
            return Err(CryptoError::DuplicateSigner(i as u32));
        }
    }
    Ok(())
}

// ---- Raw IETF operations over bare messages (the test vectors' interface). ----

/// `Sign(SK, message)`; fails for an invalid secret key (zero or out of range).
pub fn raw_sign(secret_key: &[u8], message: &[u8]) -> Result<[u8; SIGNATURE_BYTES], CryptoError> {
    let sk = BlsSecretKey::from_bytes(secret_key)?;
    Ok(sk.0.sign(message, DST_SIGNATURE, &[]).to_bytes())
}

/// `Verify(PK, message, signature)`: false for any malformed or invalid input.
pub fn raw_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(pk), Ok(sig)) = (
        BlsPublicKey::from_bytes(public_key),
        parse_signature(signature),
    ) else {
        return false;
    };
    sig.verify(true, message, DST_SIGNATURE, &[], &pk.0, false) == BLST_ERROR::BLST_SUCCESS
}

/// `Aggregate(signatures)`: fails for an empty list or any invalid signature. The
/// identity is a valid input (it is in the subgroup).
pub fn raw_aggregate(signatures: &[&[u8]]) -> Result<[u8; SIGNATURE_BYTES], CryptoError> {
    if signatures.is_empty() {
        return Err(CryptoError::Empty);
    }
    let sigs = signatures
        .iter()
        .map(|s| parse_signature(s))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&Signature> = sigs.iter().collect();
    AggregateSignature::aggregate(&refs, true)
        .map(|a| a.to_signature().to_bytes())
        .map_err(|e| malformed("BLS signature", e))
}

/// `FastAggregateVerify(PKs, message, signature)`.
pub fn raw_fast_aggregate_verify(public_keys: &[&[u8]], message: &[u8], signature: &[u8]) -> bool {
    let Ok(pks) = parse_public_keys(public_keys) else {
        return false;
    };
    let Ok(sig) = parse_signature(signature) else {
        return false;
    };
    let refs: Vec<&PublicKey> = pks.iter().map(|p| &p.0).collect();
    sig.fast_aggregate_verify(true, message, DST_SIGNATURE, &refs) == BLST_ERROR::BLST_SUCCESS
}

/// `AggregateVerify((PK_i, message_i)..., signature)`.
pub fn raw_aggregate_verify(public_keys: &[&[u8]], messages: &[&[u8]], signature: &[u8]) -> bool {
    if public_keys.len() != messages.len() {
        return false;
    }
    let Ok(pks) = parse_public_keys(public_keys) else {
        return false;
    };
    let Ok(sig) = parse_signature(signature) else {
        return false;
    };
    let refs: Vec<&PublicKey> = pks.iter().map(|p| &p.0).collect();
    sig.aggregate_verify(true, messages, DST_SIGNATURE, &refs, false) == BLST_ERROR::BLST_SUCCESS
}

/// Ethereum's `eth_aggregate_pubkeys`: at least one key, each passing KeyValidate.
pub fn raw_aggregate_public_keys(
    public_keys: &[&[u8]],
) -> Result<[u8; PUBLIC_KEY_BYTES], CryptoError> {
    let pks = parse_public_keys(public_keys)?;
    let refs: Vec<&PublicKey> = pks.iter().map(|p| &p.0).collect();
    AggregatePublicKey::aggregate(&refs, false)
        .map(|a| a.to_public_key().to_bytes())
        .map_err(|e| malformed("BLS public key", e))
}

/// Ethereum's `eth_fast_aggregate_verify`: like FastAggregateVerify, except that no keys
/// with the identity signature is valid.
pub fn raw_eth_fast_aggregate_verify(
    public_keys: &[&[u8]],
    message: &[u8],
    signature: &[u8],
) -> bool {
    if public_keys.is_empty() {
        let mut infinity = [0u8; SIGNATURE_BYTES];
        infinity[0] = 0xc0;
        return signature == infinity;
    }
    raw_fast_aggregate_verify(public_keys, message, signature)
}

/// A signature as the IETF functions take it: subgroup-checked, the identity allowed
/// (verification then fails on its own).
fn parse_signature(bytes: &[u8]) -> Result<Signature, CryptoError> {
    if bytes.len() != SIGNATURE_BYTES {
        return Err(CryptoError::Malformed {
            what: "BLS signature",
            reason: format!("expected {SIGNATURE_BYTES} bytes, got {}", bytes.len()),
        });
    }
    Signature::sig_validate(bytes, false).map_err(|e| malformed("BLS signature", e))
}

fn parse_public_keys(keys: &[&[u8]]) -> Result<Vec<BlsPublicKey>, CryptoError> {
    if keys.is_empty() {
        return Err(CryptoError::Empty);
    }
    keys.iter().map(|k| BlsPublicKey::from_bytes(k)).collect()
}

// ---- Text and serde. ----

macro_rules! bytes_newtype_impls {
    ($name:ident, $what:literal) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.to_bytes()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "{}({}…)",
                    stringify!($name),
                    &hex::encode(&self.to_bytes()[..4])
                )
            }
        }

        impl FromStr for $name {
            type Err = CryptoError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bytes = hex::decode(s.trim()).map_err(|e| CryptoError::Malformed {
                    what: $what,
                    reason: e.to_string(),
                })?;
                Self::from_bytes(&bytes)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::bytes_serde::serialize(&self.to_bytes(), s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes = crate::bytes_serde::deserialize(d)?;
                Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
            }
        }
    };
}

bytes_newtype_impls!(BlsPublicKey, "BLS public key");
bytes_newtype_impls!(BlsSignature, "BLS signature");

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use types::domain;

    pub(crate) fn keys(n: usize, seed: u64) -> Vec<BlsSecretKey> {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        (0..n).map(|_| BlsSecretKey::generate(&mut rng)).collect()
    }

    #[test]
    fn sign_verify_with_domain_separation() {
        let k = &keys(1, 1)[0];
        let sig = k.sign(domain::NOTARIZATION, b"block");
        assert_eq!(
            k.public_key().verify(domain::NOTARIZATION, b"block", &sig),
            Ok(())
        );
        assert!(
            k.public_key()
                .verify(domain::FINALIZATION, b"block", &sig)
                .is_err()
        );
        assert!(
            k.public_key()
                .verify(domain::NOTARIZATION, b"blocK", &sig)
                .is_err()
        );
    }

    #[test]
    fn multisignature_verifies_against_exactly_its_signers() {
        let ks = keys(4, 2);
        let pks: Vec<_> = ks.iter().map(|k| k.public_key()).collect();
        let sigs: Vec<_> = ks[..3]
            .iter()
            .map(|k| k.sign(domain::NOTARIZATION, b"b"))
            .collect();
        let agg = aggregate(&sigs).expect("aggregate");
        assert_eq!(
            verify_aggregate(&pks[..3], domain::NOTARIZATION, b"b", &agg),
            Ok(())
        );
        // Claiming a different signer set fails.
        assert!(verify_aggregate(&pks[1..4], domain::NOTARIZATION, b"b", &agg).is_err());
        assert!(verify_aggregate(&pks[..2], domain::NOTARIZATION, b"b", &agg).is_err());
        // Counting a signer twice is refused outright.
        let dup = [pks[0], pks[0], pks[1]];
        assert_eq!(
            verify_aggregate(&dup, domain::NOTARIZATION, b"b", &agg),
            Err(CryptoError::DuplicateSigner(1))
        );
        assert_eq!(aggregate(&[]), Err(CryptoError::Empty));
    }

    #[test]
    fn proof_of_possession_binds_key_and_holder() {
        let ks = keys(2, 3);
        let pop = ks[0].prove_possession();
        assert_eq!(ks[0].public_key().verify_possession(&pop), Ok(()));
        assert!(ks[1].public_key().verify_possession(&pop).is_err());
        // A PoP is not a signature on the key bytes under the signing DST, and vice versa:
        let pk_bytes = ks[0].public_key().to_bytes();
        let as_sig = BlsSignature(ks[0].0.sign(&pk_bytes, DST_SIGNATURE, &[]));
        assert!(
            ks[0]
                .public_key()
                .verify_possession(&ProofOfPossession(as_sig))
                .is_err()
        );
    }

    #[test]
    fn rogue_key_without_possession_proof_is_caught() {
        // The classic attack: pk_rogue = g*x - pk_victim makes an aggregate of (victim,
        // rogue) verifiable with only x. The attacker cannot produce a PoP for pk_rogue;
        // here we check that the victim's PoP does not vouch for any other key.
        let ks = keys(2, 4);
        let victim_pop = ks[0].prove_possession();
        assert!(ks[1].public_key().verify_possession(&victim_pop).is_err());
    }

    #[test]
    fn parsing_rejects_identity_and_wrong_lengths() {
        let mut inf_pk = [0u8; 48];
        inf_pk[0] = 0xc0;
        assert!(BlsPublicKey::from_bytes(&inf_pk).is_err());
        let mut inf_sig = [0u8; 96];
        inf_sig[0] = 0xc0;
        assert!(BlsSignature::from_bytes(&inf_sig).is_err());
        assert!(BlsPublicKey::from_bytes(&[1; 47]).is_err());
        assert!(BlsSignature::from_bytes(&[1; 95]).is_err());
        let pk = keys(1, 5)[0].public_key();
        assert_eq!(pk.to_string().parse::<BlsPublicKey>(), Ok(pk));
    }
}
