//! Resharing a subnet's threshold key to a new committee, by the old committee itself
//! (issue 18's non-interactive DKG; nothing secret comes from outside the subnet).
//!
//! Old member `i` holds the share `s_i = f(i + 1)` of the group secret `f(0)`. To reshare
//! it to `m` receivers with threshold `t'`, it draws a polynomial `g_i` of degree `t' - 1`
//! with `g_i(0) = s_i`, publishes Feldman commitments `C_ik = g1 · a_ik` to its
//! coefficients (so `C_i0` must be its old share public key, which everybody knows), and
//! sends receiver `j` the value `g_i(j + 1)`, encrypted to `j`'s encryption key. Each
//! receiver checks its value against the commitments (`g1 · g_i(j + 1) = Σ_k C_ik ·
//! (j + 1)^k`). Any `t` (old threshold) valid dealings from dealers `D` then give
//! receiver `j` the new share `Σ_{i∈D} λ_i · g_i(j + 1)`, where `λ_i` are the Lagrange
//! coefficients at 0 for the points `i + 1`: the new shares lie on a polynomial of degree
//! `t' - 1` whose value at 0 is `Σ λ_i s_i = f(0)`, so **the group key does not change**
//! and every CUP stays verifiable with the genesis key. The new share public keys follow
//! from the commitments alone. Fewer than `t` old members learn nothing of `f(0)`, and
//! fewer than `t'` new ones nothing of it either.
//!
//! Encryption: one ephemeral X25519 key per dealing; for receiver `j` the key is
//! HKDF-SHA-256 of the Diffie-Hellman value, bound to the context (subnet, registry
//! version), the dealer, the receiver and both public keys; ChaCha20-Poly1305 with the
//! hash of the dealing's commitments as associated data, so a value cannot be moved
//! into another dealing. Each key encrypts one message, so the nonce is fixed.
//!
//! Complaints: a receiver whose value does not open (or is off the commitments)
//! complains; the dealer answers with a [`Justification`], the value in the clear, which
//! anyone checks against the commitments. A dealer that leaves a complaint unanswered,
//! or answers it wrongly, is not [`Reshare::qualified`]. Revealing the value costs
//! nothing: a Byzantine complainer knew it, and an honest one complains only about a
//! bad dealer, while an honest dealer's values to honest receivers stay secret, and every
//! chosen set of `t` dealers holds an honest one. A dealer derives its dealing from its
//! share and the resharing ([`Reshare::deal_derived`]), so it can answer after a crash
//! without having stored its polynomial, and never deals two different dealings for one
//! resharing.

use crate::{
    CryptoError,
    bls::{BlsPublicKey, BlsSecretKey, PUBLIC_KEY_BYTES},
    scalar::{Scalar, g1_linear_combination},
    threshold::{SecretShare, ThresholdPublicKey, lagrange_at_zero},
};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, aead::Aead, aead::Payload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The bytes of an encrypted share: a 32-byte scalar and the AEAD's 16-byte tag.
pub const CIPHERTEXT_BYTES: usize = 32 + 16;
/// The most receivers (and commitments) a dealing may carry: a bound on what a dealing
/// from a Byzantine member can make a node decode and check.
pub const MAX_RECEIVERS: usize = 1_000;

const KDF_SALT: &[u8] = b"icup-reshare-v1";

/// A node's X25519 secret key for receiving reshared values.
#[derive(Clone)]
pub struct EncryptionSecretKey(x25519_dalek::StaticSecret);

/// A node's X25519 public key, registered with its node record. Hex in JSON, 32 bytes in
/// binary encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncryptionPublicKey(pub [u8; 32]);

impl EncryptionPublicKey {
    /// Refuses a low-order point: every Diffie-Hellman value with it is the same for
    /// every secret (whatever was encrypted to it could be read by anyone).
    pub fn check(&self) -> Result<(), CryptoError> {
        let probe = x25519_dalek::StaticSecret::from([0x42; 32]);
        if probe
            .diffie_hellman(&x25519_dalek::PublicKey::from(self.0))
            .was_contributory()
        {
            Ok(())
        } else {
            Err(malformed("encryption key", "a low-order point"))
        }
    }

    fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            malformed(
                "encryption key",
                format!("expected 32 bytes, got {}", bytes.len()),
            )
        })?;
        Ok(Self(bytes))
    }
}

impl std::fmt::Display for EncryptionPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for EncryptionPublicKey {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, CryptoError> {
        let bytes =
            hex::decode(s.trim()).map_err(|e| malformed("encryption key", e.to_string()))?;
        Self::from_slice(&bytes)
    }
}

impl Serialize for EncryptionPublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::bytes_serde::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for EncryptionPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::bytes_serde::deserialize(d)?;
        Self::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}

impl EncryptionSecretKey {
    pub fn generate<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(x25519_dalek::StaticSecret::from(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(x25519_dalek::StaticSecret::from(bytes))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> EncryptionPublicKey {
        EncryptionPublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }
}

impl std::fmt::Debug for EncryptionSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionSecretKey({:?})", self.public_key())
    }
}

/// One old member's resharing of its share to the receivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshareDealing {
    /// The dealer's index in the old committee.
    pub dealer: u32,
    /// `C_k = g1 · a_k` for the dealer's polynomial, `t'` of them; `C_0` is its old share
    /// public key.
    pub commitments: Vec<BlsPublicKey>,
    /// The dealing's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Receiver `j`'s value at position `j`, encrypted to it.
    pub ciphertexts: Vec<Vec<u8>>,
}

/// What a resharing is about, known to every participant.
#[derive(Clone, Copy, Debug)]
pub struct Reshare<'a> {
    /// Binds dealings to one resharing (for instance: subnet id and registry version).
    pub context: &'a [u8],
    /// The sharing being reshared.
    pub old: &'a ThresholdPublicKey,
    /// The new committee's encryption keys, by new index.
    pub receivers: &'a [EncryptionPublicKey],
    /// The new threshold `t'`.
    pub threshold: u32,
}

/// A dealer's answer to a receiver's complaint: the value it dealt that receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Justification {
    pub dealer: u32,
    pub receiver: u32,
    /// The value, a big-endian scalar.
    pub value: [u8; 32],
}

/// A receiver's checked value from one dealing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedValue {
    pub dealer: u32,
    value: Scalar,
}

/// A polynomial's value at receiver `j`'s point `j + 1` (Horner's rule).
fn evaluate_at(coefficients: &[Scalar], j: u32) -> Scalar {
    let x = Scalar::from_u64(j as u64 + 1);
    coefficients
        .iter()
        .rev()
        .fold(Scalar::default(), |acc, c| acc.mul(&x).add(c))
}

fn malformed(what: &'static str, reason: impl Into<String>) -> CryptoError {
    CryptoError::Malformed {
        what,
        reason: reason.into(),
    }
}

impl Reshare<'_> {
    fn check_params(&self) -> Result<(), CryptoError> {
        let (m, t) = (self.receivers.len(), self.threshold as usize);
        if t == 0 || t > m || m > MAX_RECEIVERS {
            return Err(CryptoError::InvalidThreshold { n: m, t });
        }
        Ok(())
    }

    fn commitments_hash(d: &ReshareDealing) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(KDF_SALT);
        h.update(d.dealer.to_be_bytes());
        for c in &d.commitments {
            h.update(c.to_bytes());
        }
        h.update(d.ephemeral);
        h.finalize().into()
    }

    /// The AEAD key for `receiver` from the Diffie-Hellman value `dh`.
    fn key(
        &self,
        dealer: u32,
        receiver: u32,
        ephemeral: &[u8; 32],
        dh: &x25519_dalek::SharedSecret,
    ) -> Result<chacha20poly1305::Key, CryptoError> {
        if !dh.was_contributory() {
            return Err(malformed("encryption key", "a low-order point"));
        }
        let mut info = Vec::with_capacity(self.context.len() + 8 + 64);
        info.extend_from_slice(&(self.context.len() as u64).to_be_bytes());
        info.extend_from_slice(self.context);
        info.extend_from_slice(&dealer.to_be_bytes());
        info.extend_from_slice(&receiver.to_be_bytes());
        info.extend_from_slice(ephemeral);
        info.extend_from_slice(&self.receivers[receiver as usize].0);
        let mut key = chacha20poly1305::Key::default();
        hkdf::Hkdf::<Sha256>::new(Some(KDF_SALT), dh.as_bytes())
            .expand(&info, &mut key)
            .map_err(|_| malformed("encryption key", "derivation"))?;
        Ok(key)
    }

    /// The dealer's randomness for this resharing, derived from its share and everything
    /// the resharing is (context, receivers, threshold): one dealing per resharing,
    /// made again identically after a crash.
    fn dealer_rng(&self, share: &SecretShare) -> Result<rand_chacha::ChaCha20Rng, CryptoError> {
        use rand::SeedableRng;
        let mut info = Vec::with_capacity(64 + self.context.len() + 32 * self.receivers.len());
        info.extend_from_slice(b"dealing");
        info.extend_from_slice(&(self.context.len() as u64).to_be_bytes());
        info.extend_from_slice(self.context);
        info.extend_from_slice(&share.index.to_be_bytes());
        info.extend_from_slice(&self.threshold.to_be_bytes());
        for r in self.receivers {
            info.extend_from_slice(&r.0);
        }
        let mut seed = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(KDF_SALT), &share.key.to_bytes())
            .expand(&info, &mut seed)
            .map_err(|_| malformed("dealing", "derivation"))?;
        Ok(rand_chacha::ChaCha20Rng::from_seed(seed))
    }

    /// [`Reshare::deal`] with the randomness derived from the share and the resharing.
    pub fn deal_derived(&self, share: &SecretShare) -> Result<ReshareDealing, CryptoError> {
        self.deal(share, &mut self.dealer_rng(share)?)
    }

    /// The dealer's answer to `receiver`'s complaint about its derived dealing.
    pub fn justify(
        &self,
        share: &SecretShare,
        receiver: u32,
    ) -> Result<Justification, CryptoError> {
        self.check_params()?;
        if receiver as usize >= self.receivers.len() {
            return Err(CryptoError::UnknownSigner {
                index: receiver,
                n: self.receivers.len(),
            });
        }
        let coefficients = self.polynomial(share, &mut self.dealer_rng(share)?);
        Ok(Justification {
            dealer: share.index,
            receiver,
            value: evaluate_at(&coefficients, receiver).to_be_bytes(),
        })
    }

    /// Checks a dealer's answer against its dealing: the value on the committed
    /// polynomial at the receiver's point.
    pub fn check_justification(
        &self,
        d: &ReshareDealing,
        j: &Justification,
    ) -> Result<OpenedValue, CryptoError> {
        self.verify_public(d)?;
        if j.dealer != d.dealer || j.receiver as usize >= self.receivers.len() {
            return Err(malformed(
                "justification",
                "it names another dealing or an unknown receiver",
            ));
        }
        let value = Scalar::from_be_bytes(&j.value);
        Self::check_value(d, j.receiver, value)?;
        Ok(OpenedValue {
            dealer: d.dealer,
            value,
        })
    }

    /// The dealers whose dealings may be chosen: each passes the public checks and has
    /// answered every complaint about it (`(dealer, receiver)` pairs) with a justification
    /// that checks. Sorted, each once.
    pub fn qualified(
        &self,
        dealings: &[&ReshareDealing],
        complaints: &[(u32, u32)],
        justifications: &[Justification],
    ) -> Vec<u32> {
        let mut out: Vec<u32> = dealings
            .iter()
            .filter(|d| self.verify_public(d).is_ok())
            .filter(|d| {
                complaints
                    .iter()
                    .filter(|(dealer, _)| *dealer == d.dealer)
                    .all(|(_, receiver)| {
                        justifications.iter().any(|j| {
                            j.receiver == *receiver && self.check_justification(d, j).is_ok()
                        })
                    })
            })
            .map(|d| d.dealer)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The dealer's polynomial: its share, then `t' - 1` random non-zero coefficients.
    fn polynomial<R: rand::RngCore + rand::CryptoRng>(
        &self,
        share: &SecretShare,
        rng: &mut R,
    ) -> Vec<Scalar> {
        let mut coefficients = vec![Scalar::from_be_bytes(&share.key.to_bytes())];
        while coefficients.len() < self.threshold as usize {
            let c = Scalar::random(rng);
            // A zero coefficient would commit to the identity, which nobody accepts.
            if !c.is_zero() {
                coefficients.push(c);
            }
        }
        coefficients
    }

    /// Reshares `share` (this node's, in the old committee) to the receivers.
    pub fn deal<R: rand::RngCore + rand::CryptoRng>(
        &self,
        share: &SecretShare,
        rng: &mut R,
    ) -> Result<ReshareDealing, CryptoError> {
        self.deal_values(share, rng, |_, v| v)
    }

    /// [`Reshare::deal`], with each receiver's value passed through `value` before it is
    /// encrypted (the identity, except for tests that play a dishonest dealer).
    fn deal_values<R: rand::RngCore + rand::CryptoRng>(
        &self,
        share: &SecretShare,
        rng: &mut R,
        value: impl Fn(usize, Scalar) -> Scalar,
    ) -> Result<ReshareDealing, CryptoError> {
        self.check_params()?;
        let coefficients = self.polynomial(share, rng);
        let commitments = coefficients
            .iter()
            .map(|c| Ok(BlsSecretKey::from_bytes(&c.to_be_bytes())?.public_key()))
            .collect::<Result<Vec<_>, CryptoError>>()?;
        let eph = EncryptionSecretKey::generate(rng);
        let mut d = ReshareDealing {
            dealer: share.index,
            commitments,
            ephemeral: eph.public_key().0,
            ciphertexts: Vec::new(),
        };
        let aad = Self::commitments_hash(&d);
        for (j, receiver) in self.receivers.iter().enumerate() {
            let value = value(j, evaluate_at(&coefficients, j as u32));
            let dh = eph
                .0
                .diffie_hellman(&x25519_dalek::PublicKey::from(receiver.0));
            let key = self.key(share.index, j as u32, &d.ephemeral, &dh)?;
            let ct = ChaCha20Poly1305::new(&key)
                .encrypt(
                    &chacha20poly1305::Nonce::default(),
                    Payload {
                        msg: &value.to_be_bytes(),
                        aad: &aad,
                    },
                )
                .map_err(|_| malformed("reshared value", "encryption"))?;
            d.ciphertexts.push(ct);
        }
        Ok(d)
    }

    /// The checks anyone can make: the dealer is an old member, the dealing has one
    /// ciphertext per receiver and `t'` commitments, and its first commitment is the
    /// dealer's old share public key (it reshares the share it holds, not another value).
    pub fn verify_public(&self, d: &ReshareDealing) -> Result<(), CryptoError> {
        self.check_params()?;
        let key = self
            .old
            .share_keys
            .get(d.dealer as usize)
            .ok_or(CryptoError::UnknownSigner {
                index: d.dealer,
                n: self.old.n(),
            })?;
        if d.commitments.len() != self.threshold as usize {
            return Err(malformed(
                "resharing dealing",
                format!(
                    "{} commitments for threshold {}",
                    d.commitments.len(),
                    self.threshold
                ),
            ));
        }
        if d.ciphertexts.len() != self.receivers.len()
            || d.ciphertexts.iter().any(|c| c.len() != CIPHERTEXT_BYTES)
        {
            return Err(malformed(
                "resharing dealing",
                format!(
                    "{} ciphertexts for {} receivers, or one of the wrong size",
                    d.ciphertexts.len(),
                    self.receivers.len()
                ),
            ));
        }
        if d.commitments[0] != *key {
            return Err(malformed(
                "resharing dealing",
                "its first commitment is not the dealer's share public key",
            ));
        }
        Ok(())
    }

    /// Commitments evaluated at `x`: `Σ_k C_k · x^k`.
    fn evaluate(
        commitments: &[BlsPublicKey],
        x: Scalar,
    ) -> Result<[u8; PUBLIC_KEY_BYTES], CryptoError> {
        let bytes: Vec<[u8; PUBLIC_KEY_BYTES]> = commitments.iter().map(|c| c.to_bytes()).collect();
        let points: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
        let mut power = Scalar::from_u64(1);
        let mut powers = Vec::with_capacity(points.len());
        for _ in 0..points.len() {
            powers.push(power);
            power = power.mul(&x);
        }
        g1_linear_combination(&points, &powers)
    }

    /// Receiver `me` decrypts its value from `d` and checks it against the commitments.
    /// An error names a dealing this receiver must not use (a bad dealer, or a dealing
    /// tampered with on the way).
    pub fn open(
        &self,
        d: &ReshareDealing,
        me: u32,
        key: &EncryptionSecretKey,
    ) -> Result<OpenedValue, CryptoError> {
        self.verify_public(d)?;
        let j = me as usize;
        if j >= self.receivers.len() || key.public_key() != self.receivers[j] {
            return Err(CryptoError::UnknownSigner {
                index: me,
                n: self.receivers.len(),
            });
        }
        let dh = key
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(d.ephemeral));
        let aead_key = self.key(d.dealer, me, &d.ephemeral, &dh)?;
        let plain = ChaCha20Poly1305::new(&aead_key)
            .decrypt(
                &chacha20poly1305::Nonce::default(),
                Payload {
                    msg: &d.ciphertexts[j],
                    aad: &Self::commitments_hash(d),
                },
            )
            .map_err(|_| malformed("reshared value", "does not decrypt"))?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| malformed("reshared value", "not 32 bytes"))?;
        let value = Scalar::from_be_bytes(&bytes);
        Self::check_value(d, me, value)?;
        Ok(OpenedValue {
            dealer: d.dealer,
            value,
        })
    }

    /// `value` is the committed polynomial's value at `receiver`'s point.
    fn check_value(d: &ReshareDealing, receiver: u32, value: Scalar) -> Result<(), CryptoError> {
        let expected = Self::evaluate(&d.commitments, Scalar::from_u64(receiver as u64 + 1))?;
        let got = BlsSecretKey::from_bytes(&value.to_be_bytes())?.public_key();
        if got.to_bytes() != expected {
            return Err(malformed(
                "reshared value",
                "it does not match the dealer's commitments",
            ));
        }
        Ok(())
    }

    /// The dealers whose dealings are used: the `t` (old threshold) lowest indices among
    /// `dealers`, deterministic so that every node picks the same set.
    pub fn choose(&self, dealers: impl IntoIterator<Item = u32>) -> Result<Vec<u32>, CryptoError> {
        let mut all: Vec<u32> = dealers.into_iter().collect();
        all.sort_unstable();
        all.dedup();
        let t = self.old.threshold as usize;
        if all.len() < t {
            return Err(CryptoError::NotEnoughShares {
                needed: t,
                got: all.len(),
            });
        }
        all.truncate(t);
        Ok(all)
    }

    fn lagrange(dealers: &[u32]) -> Result<Vec<Scalar>, CryptoError> {
        let xs: Vec<Scalar> = dealers
            .iter()
            .map(|i| Scalar::from_u64(*i as u64 + 1))
            .collect();
        lagrange_at_zero(&xs)
    }

    /// Receiver `me`'s new share from its opened values of the chosen dealings (exactly
    /// the dealers [`Reshare::choose`] picked).
    pub fn combine(&self, me: u32, opened: &[OpenedValue]) -> Result<SecretShare, CryptoError> {
        let by_dealer: BTreeMap<u32, Scalar> = opened.iter().map(|o| (o.dealer, o.value)).collect();
        let dealers: Vec<u32> = by_dealer.keys().copied().collect();
        if dealers.len() != self.old.threshold as usize {
            return Err(CryptoError::NotEnoughShares {
                needed: self.old.threshold as usize,
                got: dealers.len(),
            });
        }
        let lambdas = Self::lagrange(&dealers)?;
        let secret = by_dealer
            .values()
            .zip(&lambdas)
            .fold(Scalar::default(), |acc, (v, l)| acc.add(&v.mul(l)));
        Ok(SecretShare {
            index: me,
            key: BlsSecretKey::from_bytes(&secret.to_be_bytes())?,
        })
    }

    /// The new committee's public key from the chosen dealings (each checked with
    /// [`Reshare::verify_public`]): the same group key as the old one (checked), and each
    /// receiver's share public key.
    pub fn public_key(
        &self,
        chosen: &[&ReshareDealing],
    ) -> Result<ThresholdPublicKey, CryptoError> {
        let dealers: Vec<u32> = chosen.iter().map(|d| d.dealer).collect();
        if self.choose(dealers.iter().copied())? != dealers {
            return Err(malformed(
                "resharing",
                "the dealings are not the chosen ones, in order",
            ));
        }
        for d in chosen {
            self.verify_public(d)?;
        }
        let lambdas = Self::lagrange(&dealers)?;
        // Receiver x's key: Σ_i λ_i Σ_k C_ik x^k, one multi-scalar multiplication.
        let at = |x: Scalar| -> Result<BlsPublicKey, CryptoError> {
            let mut points = Vec::new();
            let mut scalars = Vec::new();
            for (d, l) in chosen.iter().zip(&lambdas) {
                let mut power = *l;
                for c in &d.commitments {
                    points.push(c.to_bytes());
                    scalars.push(power);
                    power = power.mul(&x);
                }
            }
            let refs: Vec<&[u8]> = points.iter().map(|p| p.as_slice()).collect();
            BlsPublicKey::from_bytes(&g1_linear_combination(&refs, &scalars)?)
        };
        let group_key = at(Scalar::default())?;
        if group_key != self.old.group_key {
            return Err(malformed(
                "resharing",
                "the dealings do not keep the group key",
            ));
        }
        let share_keys = (0..self.receivers.len())
            .map(|j| at(Scalar::from_u64(j as u64 + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ThresholdPublicKey {
            group_key,
            share_keys,
            threshold: self.threshold,
        })
    }
}

#[cfg(test)]
#[path = "reshare_tests.rs"]
mod tests;
