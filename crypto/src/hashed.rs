//! BLS signing and verification on a message already hashed to G2.
//!
//! Hashing to the curve is about a third of a BLS signature's cost, and a consensus
//! node hashes each message twice (signing its share, then checking the aggregate or
//! combination of everybody's) and a simulator n times more. [`HashedMessage`] is that
//! hash, computed once; [`MessageHashes`] keeps the last few. Signing is blst's own
//! `sign_pk_in_g1` on the hash; verification is the pairing equation
//! `e(pk, H(m)) == e(g1, sig)` through blst's Miller loop and final verification, on the
//! calling thread (blst's high-level single-message verification hands one pairing to
//! its thread pool). Both give exactly what [`crate::bls`]'s functions give (tests).
//!
//! Like [`crate::scalar`], this module calls blst's C functions: each call passes
//! pointers to properly initialised, live values of the types the C signature names.
#![allow(unsafe_code)]

use crate::{
    CryptoError,
    bls::{BlsPublicKey, BlsSecretKey, BlsSignature, DST_SIGNATURE},
};
use blst::{
    blst_fp12, blst_fp12_finalverify, blst_hash_to_g2, blst_miller_loop, blst_p1_affine,
    blst_p1_affine_generator, blst_p2, blst_p2_affine, blst_p2_to_affine, blst_scalar,
    blst_scalar_from_bendian, blst_sign_pk_in_g1,
    min_pk::{AggregatePublicKey, PublicKey},
};
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};
use types::domain::Domain;

/// `H(domain, bytes)` in G2: what a signature on `(domain, bytes)` is a multiple of.
#[derive(Clone, Copy, Debug)]
pub struct HashedMessage {
    point: blst_p2,
    affine: blst_p2_affine,
}

impl HashedMessage {
    /// Hashes with the ciphersuite's DST, exactly as [`BlsSecretKey::sign`] does.
    pub fn new(domain: Domain, bytes: &[u8]) -> Self {
        let msg = domain.frame(bytes);
        let mut point = blst_p2::default();
        let mut affine = blst_p2_affine::default();
        // SAFETY: `msg` and `DST_SIGNATURE` are live slices of the given lengths; a null
        // augmentation of length 0 is what blst's own `sign` passes.
        unsafe {
            blst_hash_to_g2(
                &mut point,
                msg.as_ptr(),
                msg.len(),
                DST_SIGNATURE.as_ptr(),
                DST_SIGNATURE.len(),
                std::ptr::null(),
                0,
            );
            blst_p2_to_affine(&mut affine, &point);
        }
        Self { point, affine }
    }
}

impl BlsSecretKey {
    /// [`BlsSecretKey::sign`] on a message hashed already.
    pub fn sign_hashed(&self, message: &HashedMessage) -> BlsSignature {
        let mut scalar = blst_scalar::default();
        let bytes = self.to_bytes();
        let mut sig = blst_p2::default();
        let mut affine = blst_p2_affine::default();
        // SAFETY: `bytes` is the 32-byte big-endian scalar blst_scalar_from_bendian reads;
        // the rest are initialised values of the named types.
        unsafe {
            blst_scalar_from_bendian(&mut scalar, bytes.as_ptr());
            blst_sign_pk_in_g1(&mut sig, &message.point, &scalar);
            blst_p2_to_affine(&mut affine, &sig);
        }
        BlsSignature::from_point(affine)
    }
}

/// `e(pk, H(m)) == e(g1, sig)`. Both points are validated already (the types say so).
fn pairing_check(pk: &blst_p1_affine, message: &HashedMessage, sig: &blst_p2_affine) -> bool {
    let mut lhs = blst_fp12::default();
    let mut rhs = blst_fp12::default();
    // SAFETY: initialised values of the named types; the generator is blst's static.
    unsafe {
        blst_miller_loop(&mut lhs, &message.affine, pk);
        blst_miller_loop(&mut rhs, sig, blst_p1_affine_generator());
        blst_fp12_finalverify(&lhs, &rhs)
    }
}

impl BlsPublicKey {
    /// [`BlsPublicKey::verify`] on a message hashed already.
    pub fn verify_hashed(
        &self,
        message: &HashedMessage,
        signature: &BlsSignature,
    ) -> Result<(), CryptoError> {
        if pairing_check(&self.point(), message, &signature.point()) {
            Ok(())
        } else {
            Err(CryptoError::InvalidSignature { what: "BLS" })
        }
    }
}

/// [`crate::bls::verify_aggregate`] on a message hashed already.
pub fn verify_aggregate_hashed(
    signers: &[BlsPublicKey],
    message: &HashedMessage,
    signature: &BlsSignature,
) -> Result<(), CryptoError> {
    crate::bls::check_distinct(signers)?;
    let keys: Vec<PublicKey> = signers.iter().map(|p| PublicKey::from(p.point())).collect();
    let refs: Vec<&PublicKey> = keys.iter().collect();
    // The keys are validated already, so no group check here.
    let sum = AggregatePublicKey::aggregate(&refs, false)
        .map_err(|_| CryptoError::Empty)?
        .to_public_key();
    if pairing_check(&blst_p1_affine::from(sum), message, &signature.point()) {
        Ok(())
    } else {
        Err(CryptoError::InvalidSignature {
            what: "BLS multi-signature",
        })
    }
}

/// How many hashes [`MessageHashes`] keeps: a consensus height signs and checks a
/// handful of messages, and a node works on a few heights at once.
const KEPT: usize = 32;
/// Longer messages are hashed every time rather than kept (consensus signs hashes and
/// short headers; this bounds the memory a key takes).
const MAX_KEPT_MESSAGE: usize = 256;

/// Hashes by their framed message, oldest first.
type Kept = VecDeque<(Vec<u8>, HashedMessage)>;

/// The last few messages hashed to G2, by their framed bytes. Clones share one store (the
/// simulator gives one to all its nodes).
#[derive(Clone, Debug, Default)]
pub struct MessageHashes(Arc<Mutex<Kept>>);

impl MessageHashes {
    pub fn get(&self, domain: Domain, bytes: &[u8]) -> HashedMessage {
        let framed = domain.frame(bytes);
        if framed.len() > MAX_KEPT_MESSAGE {
            return HashedMessage::new(domain, bytes);
        }
        if let Ok(kept) = self.0.lock()
            && let Some((_, h)) = kept.iter().find(|(m, _)| *m == framed)
        {
            return *h;
        }
        let h = HashedMessage::new(domain, bytes);
        if let Ok(mut kept) = self.0.lock() {
            if kept.len() >= KEPT {
                kept.pop_front();
            }
            kept.push_back((framed, h));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bls::{aggregate, tests::keys, verify_aggregate};
    use types::domain;

    #[test]
    fn hashed_signing_and_checking_agree_with_the_plain_functions() {
        let ks = keys(3, 7);
        for (i, msg) in [&b""[..], b"block", &[0xab; 300]].into_iter().enumerate() {
            let h = HashedMessage::new(domain::NOTARIZATION, msg);
            let k = &ks[i];
            let sig = k.sign_hashed(&h);
            assert_eq!(sig, k.sign(domain::NOTARIZATION, msg));
            assert_eq!(k.public_key().verify_hashed(&h, &sig), Ok(()));
            // Another key, another domain, another message: all refused, as by `verify`.
            let other = ks[(i + 1) % 3].public_key();
            assert!(other.verify_hashed(&h, &sig).is_err());
            let wrong_domain = HashedMessage::new(domain::FINALIZATION, msg);
            assert!(k.public_key().verify_hashed(&wrong_domain, &sig).is_err());
            let wrong_msg = HashedMessage::new(domain::NOTARIZATION, b"blocK");
            assert!(k.public_key().verify_hashed(&wrong_msg, &sig).is_err());
        }
    }

    #[test]
    fn hashed_aggregate_checks_agree_with_the_plain_one() {
        let ks = keys(4, 8);
        let pks: Vec<_> = ks.iter().map(|k| k.public_key()).collect();
        let h = HashedMessage::new(domain::FINALIZATION, b"b");
        let sigs: Vec<_> = ks[..3].iter().map(|k| k.sign_hashed(&h)).collect();
        let agg = aggregate(&sigs).expect("aggregate");
        for signers in [&pks[..3], &pks[1..4], &pks[..2], &pks[..]] {
            assert_eq!(
                verify_aggregate_hashed(signers, &h, &agg).is_ok(),
                verify_aggregate(signers, domain::FINALIZATION, b"b", &agg).is_ok(),
            );
        }
        assert_eq!(verify_aggregate_hashed(&pks[..3], &h, &agg), Ok(()));
        assert_eq!(
            verify_aggregate_hashed(&[pks[0], pks[1], pks[0]], &h, &agg),
            Err(CryptoError::DuplicateSigner(2))
        );
        assert_eq!(
            verify_aggregate_hashed(&[], &h, &agg),
            Err(CryptoError::Empty)
        );
    }

    #[test]
    fn kept_hashes_are_the_hashes_of_their_own_messages() {
        let hashes = MessageHashes::default();
        let k = &keys(1, 9)[0];
        // More messages than are kept, each asked for twice, in two domains.
        for round in 0..2 {
            for i in 0..(KEPT as u32 + 5) {
                for d in [domain::NOTARIZATION, domain::FINALIZATION] {
                    let msg = i.to_be_bytes();
                    let sig = k.sign_hashed(&hashes.get(d, &msg));
                    assert_eq!(sig, k.sign(d, &msg), "round {round}, message {i}");
                }
            }
        }
        assert!(hashes.0.lock().expect("kept").len() <= KEPT);
        let long = [1u8; MAX_KEPT_MESSAGE + 1];
        let sig = k.sign_hashed(&hashes.get(domain::NOTARIZATION, &long));
        assert_eq!(sig, k.sign(domain::NOTARIZATION, &long));
    }
}
