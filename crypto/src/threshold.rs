//! Threshold BLS with a trusted dealer (used once, at subnet genesis or recovery).
//!
//! The dealer draws a random polynomial `f` of degree `t - 1` over the scalar field; the
//! subnet secret is `f(0)`, node `i` (0-based) gets the share `f(i + 1)`, and publishes
//! `g * f(i + 1)` as its share public key. A signature share is an ordinary BLS signature
//! with the share key. Any `t` shares combine by Lagrange interpolation at 0 into
//! `f(0) * H(m)`: the unique signature of the subnet key, which anyone verifies with
//! ordinary BLS verification. Fewer than `t` shares carry no information about it.
//!
//! Thresholds for a subnet of `n = 3f + 1` nodes: low `f + 1` (random beacon, at least one
//! honest signer), high `n - f` (CUPs and state certification, a quorum).

use crate::{
    CryptoError,
    bls::{BlsPublicKey, BlsSecretKey, BlsSignature, SIGNATURE_BYTES},
    scalar::{Scalar, g2_linear_combination},
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use types::domain::Domain;

/// The largest number of faulty nodes a subnet of `n` tolerates: `floor((n - 1) / 3)`.
pub fn max_faulty(n: usize) -> usize {
    n.saturating_sub(1) / 3
}

/// `f + 1`: the random beacon's threshold.
pub fn low_threshold(n: usize) -> usize {
    max_faulty(n) + 1
}

/// `n - f`: the threshold of CUPs, certification, notarization and finalization.
pub fn high_threshold(n: usize) -> usize {
    n - max_faulty(n)
}

/// What everybody may know about a sharing: the group key, each share's public key, and
/// the threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdPublicKey {
    pub group_key: BlsPublicKey,
    /// Indexed by the share index (the node's position in the subnet).
    pub share_keys: Vec<BlsPublicKey>,
    pub threshold: u32,
}

/// One node's secret share.
#[derive(Clone, Debug)]
pub struct SecretShare {
    pub index: u32,
    pub key: BlsSecretKey,
}

/// One node's signature share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureShare {
    pub index: u32,
    pub signature: BlsSignature,
}

/// The dealer's output: public material plus one secret share per participant.
#[derive(Debug)]
pub struct Dealing {
    pub public: ThresholdPublicKey,
    pub shares: Vec<SecretShare>,
}

/// Shares a fresh random key among `n` participants with threshold `t`.
pub fn deal<R: rand::RngCore + rand::CryptoRng>(
    n: usize,
    t: usize,
    rng: &mut R,
) -> Result<Dealing, CryptoError> {
    if t == 0 || t > n || n > u32::MAX as usize {
        return Err(CryptoError::InvalidThreshold { n, t });
    }
    // A zero secret (probability 2^-255) would be an invalid key: draw again.
    let coefficients: Vec<Scalar> = (0..t)
        .map(|i| {
            loop {
                let c = Scalar::random(rng);
                if i > 0 || !c.is_zero() {
                    break c;
                }
            }
        })
        .collect();
    let eval = |x: u64| {
        // Horner's rule from the highest coefficient down.
        let x = Scalar::from_u64(x);
        coefficients
            .iter()
            .rev()
            .fold(Scalar::default(), |acc, c| acc.mul(&x).add(c))
    };
    let key_of = |s: Scalar| BlsSecretKey::from_bytes(&s.to_be_bytes());
    let group_secret = key_of(coefficients[0])?;
    let mut shares = Vec::with_capacity(n);
    for i in 0..n {
        // f(i + 1) = 0 has probability 2^-255 per share; surface it rather than loop.
        let key = key_of(eval(i as u64 + 1))?;
        shares.push(SecretShare {
            index: i as u32,
            key,
        });
    }
    let public = ThresholdPublicKey {
        group_key: group_secret.public_key(),
        share_keys: shares.iter().map(|s| s.key.public_key()).collect(),
        threshold: t as u32,
    };
    Ok(Dealing { public, shares })
}

impl SecretShare {
    pub fn sign(&self, domain: Domain, bytes: &[u8]) -> SignatureShare {
        SignatureShare {
            index: self.index,
            signature: self.key.sign(domain, bytes),
        }
    }
}

impl ThresholdPublicKey {
    pub fn n(&self) -> usize {
        self.share_keys.len()
    }

    /// Verifies one share against its share public key.
    pub fn verify_share(
        &self,
        domain: Domain,
        bytes: &[u8],
        share: &SignatureShare,
    ) -> Result<(), CryptoError> {
        let key = self
            .share_keys
            .get(share.index as usize)
            .ok_or(CryptoError::UnknownSigner {
                index: share.index,
                n: self.n(),
            })?;
        key.verify(domain, bytes, &share.signature)
    }

    /// Combines shares into the group signature. Uses the `threshold` shares with the
    /// lowest indices (duplicates of an index are ignored); it does not verify shares:
    /// callers verify each share as it arrives, and the result verifies only if those
    /// `threshold` shares were valid.
    pub fn combine(&self, shares: &[SignatureShare]) -> Result<BlsSignature, CryptoError> {
        let bytes: Vec<(u32, [u8; SIGNATURE_BYTES])> = shares
            .iter()
            .map(|s| (s.index, s.signature.to_bytes()))
            .collect();
        let refs: Vec<(u32, &[u8])> = bytes.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        BlsSignature::from_bytes(&self.combine_encoded(&refs)?)
    }

    /// [`ThresholdPublicKey::combine`] on encoded shares, for a combination that is
    /// checked as a whole afterwards (optimistic verification): each share is decoded
    /// once and only checked to be on the curve, not in the subgroup, and the result is
    /// returned encoded, unchecked. That is safe only because the result is then verified
    /// ([`ThresholdPublicKey::verify`] checks its subgroup and its pairing): the signature
    /// is unique, so a result that verifies is the group's signature whatever the shares
    /// were, and a share off the subgroup can only make that check fail. A malformed
    /// share (wrong length, not on the curve) is refused here.
    pub fn combine_encoded(
        &self,
        shares: &[(u32, &[u8])],
    ) -> Result<[u8; SIGNATURE_BYTES], CryptoError> {
        let t = self.threshold as usize;
        let mut by_index: BTreeMap<u32, &[u8]> = BTreeMap::new();
        for &(index, bytes) in shares {
            if index as usize >= self.n() {
                return Err(CryptoError::UnknownSigner { index, n: self.n() });
            }
            if bytes.len() != SIGNATURE_BYTES {
                return Err(CryptoError::Malformed {
                    what: "BLS signature share",
                    reason: format!("expected {SIGNATURE_BYTES} bytes, got {}", bytes.len()),
                });
            }
            by_index.entry(index).or_insert(bytes);
        }
        if by_index.len() < t {
            return Err(CryptoError::NotEnoughShares {
                needed: t,
                got: by_index.len(),
            });
        }
        let chosen: Vec<(u32, &[u8])> = by_index.into_iter().take(t).collect();
        let xs: Vec<Scalar> = chosen
            .iter()
            .map(|(i, _)| Scalar::from_u64(*i as u64 + 1))
            .collect();
        let lambdas = lagrange_at_zero(&xs)?;
        let points: Vec<&[u8]> = chosen.iter().map(|(_, p)| *p).collect();
        g2_linear_combination(&points, &lambdas)
    }

    /// Verifies a combined signature: ordinary BLS verification with the group key.
    pub fn verify(
        &self,
        domain: Domain,
        bytes: &[u8],
        signature: &BlsSignature,
    ) -> Result<(), CryptoError> {
        self.group_key.verify(domain, bytes, signature)
    }
}

/// `lambda_i = prod_{j != i} x_j / (x_j - x_i)`, the coefficients that interpolate a
/// polynomial's value at 0 from its values at the (distinct, non-zero) points `xs`.
pub(crate) fn lagrange_at_zero(xs: &[Scalar]) -> Result<Vec<Scalar>, CryptoError> {
    let one = Scalar::from_u64(1);
    xs.iter()
        .enumerate()
        .map(|(i, xi)| {
            let (mut num, mut den) = (one, one);
            for (j, xj) in xs.iter().enumerate() {
                if i != j {
                    num = num.mul(xj);
                    den = den.mul(&xj.sub(xi));
                }
            }
            let inv = den
                .inverse()
                .ok_or(CryptoError::DuplicateSigner(i as u32))?;
            Ok(num.mul(&inv))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, seq::SliceRandom};
    use rand_chacha::ChaCha20Rng;
    use types::domain;

    const MSG: &[u8] = b"cup content";
    const D: Domain = domain::CUP_CONTENT;

    fn shares_of(dealing: &Dealing, indices: &[usize]) -> Vec<SignatureShare> {
        indices
            .iter()
            .map(|&i| dealing.shares[i].sign(D, MSG))
            .collect()
    }

    fn binomial(n: usize, k: usize) -> usize {
        (0..k).fold(1usize, |acc, i| acc.saturating_mul(n - i) / (i + 1))
    }

    /// All k-subsets of 0..n, in lexicographic order.
    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        fn go(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if cur.len() == k {
                out.push(cur.clone());
                return;
            }
            for i in start..n {
                cur.push(i);
                go(i + 1, n, k, cur, out);
                cur.pop();
            }
        }
        let mut out = Vec::new();
        go(0, n, k, &mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn thresholds_for_subnet_sizes() {
        // (n, f, low, high)
        for (n, f, low, high) in [
            (1, 0, 1, 1),
            (4, 1, 2, 3),
            (7, 2, 3, 5),
            (13, 4, 5, 9),
            (40, 13, 14, 27),
        ] {
            assert_eq!(
                (max_faulty(n), low_threshold(n), high_threshold(n)),
                (f, low, high),
                "n={n}"
            );
        }
    }

    #[test]
    fn dealing_rejects_bad_parameters() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert!(matches!(
            deal(4, 0, &mut rng),
            Err(CryptoError::InvalidThreshold { .. })
        ));
        assert!(matches!(
            deal(4, 5, &mut rng),
            Err(CryptoError::InvalidThreshold { .. })
        ));
    }

    /// For each (n, t): every share verifies; random t-subsets give the same signature,
    /// which verifies against the group key; every (t-1)-subset fails (exhaustively where
    /// the number of subsets is small, else a random sample of them).
    fn check_threshold(n: usize, t: usize, seed: u64, random_subsets: usize, max_below: usize) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let dealing = deal(n, t, &mut rng).expect("deal");
        let public = &dealing.public;
        let all = shares_of(&dealing, &(0..n).collect::<Vec<_>>());
        for s in &all {
            assert_eq!(public.verify_share(D, MSG, s), Ok(()), "share {}", s.index);
            assert!(public.verify_share(domain::NOTARIZATION, MSG, s).is_err());
        }
        let mut reference: Option<BlsSignature> = None;
        let mut indices: Vec<usize> = (0..n).collect();
        for _ in 0..random_subsets {
            indices.shuffle(&mut rng);
            let subset: Vec<SignatureShare> = indices[..t].iter().map(|&i| all[i]).collect();
            let sig = public.combine(&subset).expect("combine");
            assert_eq!(
                public.verify(D, MSG, &sig),
                Ok(()),
                "n={n} t={t} {:?}",
                &indices[..t]
            );
            match reference {
                None => reference = Some(sig),
                Some(r) => assert_eq!(r, sig, "two t-subsets gave different signatures"),
            }
        }
        // t - 1 shares never make a signature: combine refuses, and interpolating them as
        // if the threshold were t - 1 gives a signature that does not verify.
        let sample: Vec<Vec<usize>> = if binomial(n, t - 1) <= max_below {
            subsets(n, t - 1)
        } else {
            (0..max_below)
                .map(|_| {
                    indices.shuffle(&mut rng);
                    indices[..t - 1].to_vec()
                })
                .collect()
        };
        let weaker = ThresholdPublicKey {
            threshold: (t - 1) as u32,
            ..public.clone()
        };
        for subset in &sample {
            let shares: Vec<SignatureShare> = subset.iter().map(|&i| all[i]).collect();
            assert_eq!(
                public.combine(&shares),
                Err(CryptoError::NotEnoughShares {
                    needed: t,
                    got: t - 1
                })
            );
            if t > 1 {
                let forged = weaker.combine(&shares).expect("interpolates");
                assert!(
                    public.verify(D, MSG, &forged).is_err(),
                    "{subset:?} forged a signature"
                );
            }
        }
    }

    #[test]
    fn threshold_4_of_3_every_below_threshold_subset_fails() {
        check_threshold(4, 3, 11, 8, usize::MAX);
    }

    #[test]
    fn threshold_13_of_9() {
        // C(13, 8) = 1287 subsets of 8: all of them.
        check_threshold(13, 9, 12, 6, usize::MAX);
    }

    #[test]
    fn threshold_40_of_27() {
        // C(40, 26) is about 2.3e10: a random sample of 40 of them.
        check_threshold(40, 27, 13, 4, 40);
    }

    #[test]
    fn low_thresholds_work_too() {
        check_threshold(4, 2, 14, 6, usize::MAX);
        check_threshold(7, 3, 15, 6, usize::MAX);
    }

    #[test]
    fn combined_signature_is_the_unique_signature_of_the_group_secret() {
        // Interpolating the share secrets at 0 recovers f(0); signing with it directly
        // must give byte-identical output to combining shares.
        let mut rng = ChaCha20Rng::seed_from_u64(16);
        let d = deal(4, 3, &mut rng).expect("deal");
        let xs: Vec<Scalar> = (1..=3).map(Scalar::from_u64).collect();
        let lambdas = lagrange_at_zero(&xs).expect("distinct");
        let secret = d.shares[..3]
            .iter()
            .zip(&lambdas)
            .map(|(s, l)| Scalar::from_be_bytes(&s.key.to_bytes()).mul(l))
            .fold(Scalar::default(), |a, b| a.add(&b));
        let direct = BlsSecretKey::from_bytes(&secret.to_be_bytes()).expect("key");
        assert_eq!(direct.public_key(), d.public.group_key);
        let combined = d
            .public
            .combine(&shares_of(&d, &[0, 1, 2]))
            .expect("combine");
        assert_eq!(direct.sign(D, MSG), combined);
    }

    #[test]
    fn an_invalid_share_spoils_the_combination_and_is_caught_by_share_verification() {
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        let d = deal(4, 3, &mut rng).expect("deal");
        let mut shares = shares_of(&d, &[0, 1, 2]);
        // Node 2 signs another message but claims it is for MSG.
        shares[2] = d.shares[2].sign(D, b"something else");
        assert!(d.public.verify_share(D, MSG, &shares[2]).is_err());
        let sig = d.public.combine(&shares).expect("combines");
        assert!(d.public.verify(D, MSG, &sig).is_err());
        // Out-of-range index.
        let bogus = SignatureShare {
            index: 9,
            signature: shares[0].signature,
        };
        assert!(matches!(
            d.public.combine(&[bogus]),
            Err(CryptoError::UnknownSigner { .. })
        ));
    }

    #[test]
    fn combining_encoded_shares_gives_the_same_signature_and_refuses_malformed_ones() {
        let mut rng = ChaCha20Rng::seed_from_u64(19);
        let d = deal(4, 3, &mut rng).expect("deal");
        let shares = shares_of(&d, &[3, 1, 0]);
        let bytes: Vec<(u32, [u8; SIGNATURE_BYTES])> = shares
            .iter()
            .map(|s| (s.index, s.signature.to_bytes()))
            .collect();
        let mut refs: Vec<(u32, &[u8])> = bytes.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        let combined = d.public.combine_encoded(&refs).expect("combine");
        assert_eq!(
            combined,
            d.public.combine(&shares).expect("combine").to_bytes()
        );
        assert!(
            d.public
                .verify(
                    D,
                    MSG,
                    &BlsSignature::from_bytes(&combined).expect("decodes")
                )
                .is_ok()
        );
        // Not a point (a bad encoding), a short one: refused, not combined.
        let junk = [0xffu8; SIGNATURE_BYTES];
        refs[1].1 = &junk;
        assert!(matches!(
            d.public.combine_encoded(&refs),
            Err(CryptoError::Malformed { .. })
        ));
        refs[1].1 = &bytes[1].1[..40];
        assert!(matches!(
            d.public.combine_encoded(&refs),
            Err(CryptoError::Malformed { .. })
        ));
    }

    #[test]
    fn duplicate_shares_count_once() {
        let mut rng = ChaCha20Rng::seed_from_u64(18);
        let d = deal(4, 3, &mut rng).expect("deal");
        let s = shares_of(&d, &[0, 0, 1]);
        assert_eq!(
            d.public.combine(&s),
            Err(CryptoError::NotEnoughShares { needed: 3, got: 2 })
        );
    }
}
