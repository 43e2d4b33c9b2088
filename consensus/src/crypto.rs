//! The signatures consensus needs, behind one trait: production uses
//! [`RealCrypto`] (ed25519 and BLS on blst); the simulator may use its own cheap,
//! clearly named stand-in, which lives in the simulator crate so that no replica can be
//! built with it.

use crate::artifact::NodeIndex;
use crypto::{
    bls::{self, BlsPublicKey, BlsSecretKey, BlsSignature},
    ed25519::{Ed25519KeyPair, Ed25519PublicKey, Ed25519Signature},
    hashed::{MessageHashes, verify_aggregate_hashed},
    reshare::EncryptionSecretKey,
    threshold::{SecretShare, ThresholdPublicKey},
};
use types::domain::Domain;

/// Which threshold key: low (`f + 1`, random beacon) or high (`n - f`, certification, CUPs).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Threshold {
    Low,
    High,
}

/// Signing with this node's keys and verifying anyone's. Signatures are bytes, so the
/// protocol does not depend on the scheme.
pub trait ConsensusCrypto {
    /// This node's own signature (ed25519): block proposals, readiness.
    fn sign_node(&self, domain: Domain, message: &[u8]) -> Vec<u8>;
    fn verify_node(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool;
    /// The block maker's signature.
    fn sign_block(&self, message: &[u8]) -> Vec<u8> {
        self.sign_node(types::domain::BLOCK_PROPOSAL, message)
    }
    fn verify_block(&self, signer: NodeIndex, message: &[u8], signature: &[u8]) -> bool {
        self.verify_node(signer, types::domain::BLOCK_PROPOSAL, message, signature)
    }

    /// Multi-signature shares (notarization, finalization).
    fn sign_multi(&self, domain: Domain, message: &[u8]) -> Vec<u8>;
    fn verify_multi_share(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool;
    /// The aggregate of `shares`, unchecked (its parts need not have been checked
    /// either): use it only once [`ConsensusCrypto::verify_multi`] accepts it.
    fn aggregate_multi(&self, shares: &[&[u8]]) -> Option<Vec<u8>>;
    fn verify_multi(
        &self,
        signers: &[NodeIndex],
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool;

    /// Threshold shares and their combination.
    fn sign_threshold(&self, which: Threshold, domain: Domain, message: &[u8]) -> Vec<u8>;
    fn verify_threshold_share(
        &self,
        which: Threshold,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool;
    /// The combination of `shares`, unchecked (its parts need not have been checked
    /// either): use it only once [`ConsensusCrypto::verify_threshold`] accepts it.
    fn combine_threshold(&self, which: Threshold, shares: &[(NodeIndex, &[u8])])
    -> Option<Vec<u8>>;
    fn verify_threshold(
        &self,
        which: Threshold,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool;

    /// An ed25519 signature by a node known by its key, not its index: a receiver of a
    /// resharing's values may not be in the committee yet.
    fn verify_member(
        &self,
        node_key: &[u8; 32],
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let (Ok(pk), Ok(sig)) = (
            Ed25519PublicKey::from_bytes(node_key),
            Ed25519Signature::from_bytes(signature),
        ) else {
            return false;
        };
        pk.verify(domain, message, &sig).is_ok()
    }

    /// This node's secrets for a resharing: its shares of both keys (to deal) and its
    /// dealing encryption key (to open what it is dealt). `None`: it deals nothing and
    /// complains about nothing (a simulator stand-in).
    fn resharing_secrets(&self) -> Option<ResharingSecrets<'_>> {
        None
    }
}

/// What a committee member deals and opens with.
#[derive(Clone, Copy, Debug)]
pub struct ResharingSecrets<'a> {
    pub low_share: &'a SecretShare,
    pub high_share: &'a SecretShare,
    pub encryption: Option<&'a EncryptionSecretKey>,
}

/// The public keys of a subnet.
#[derive(Clone, Debug)]
pub struct SubnetKeys {
    /// Indexed by node index.
    pub ed25519: Vec<Ed25519PublicKey>,
    /// Indexed by node index; every one's proof of possession was checked by the registry.
    pub bls: Vec<BlsPublicKey>,
    pub low: ThresholdPublicKey,
    pub high: ThresholdPublicKey,
}

/// This node's secrets.
#[derive(Debug)]
pub struct NodeSecrets {
    pub ed25519: Ed25519KeyPair,
    pub bls: BlsSecretKey,
    pub low_share: SecretShare,
    pub high_share: SecretShare,
    /// The key this node's resharing values are encrypted to (its registered dealing
    /// encryption key); without one it can deal but not receive.
    pub encryption: Option<EncryptionSecretKey>,
}

/// ed25519 for blocks, BLS multi-signatures, threshold BLS.
#[derive(Debug)]
pub struct RealCrypto {
    pub keys: SubnetKeys,
    pub secrets: NodeSecrets,
    /// Each message is hashed to G2 once for its signing and its checks (a third of a
    /// BLS operation's cost).
    pub hashes: MessageHashes,
}

impl RealCrypto {
    /// The same keys and secrets with a cache of its own (a node restarted in a test or
    /// the simulator: `Ed25519KeyPair` is not `Clone`).
    pub fn duplicate(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            secrets: NodeSecrets {
                ed25519: crypto::ed25519::Ed25519KeyPair::from_seed(&self.secrets.ed25519.seed()),
                bls: self.secrets.bls.clone(),
                low_share: self.secrets.low_share.clone(),
                high_share: self.secrets.high_share.clone(),
                encryption: self.secrets.encryption.clone(),
            },
            hashes: Default::default(),
        }
    }

    fn threshold_key(&self, which: Threshold) -> &ThresholdPublicKey {
        match which {
            Threshold::Low => &self.keys.low,
            Threshold::High => &self.keys.high,
        }
    }
}

impl ConsensusCrypto for RealCrypto {
    fn sign_node(&self, domain: Domain, message: &[u8]) -> Vec<u8> {
        self.secrets.ed25519.sign(domain, message).0.to_vec()
    }

    fn verify_node(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let (Some(pk), Ok(sig)) = (
            self.keys.ed25519.get(signer as usize),
            Ed25519Signature::from_bytes(signature),
        ) else {
            return false;
        };
        pk.verify(domain, message, &sig).is_ok()
    }

    fn sign_multi(&self, domain: Domain, message: &[u8]) -> Vec<u8> {
        let h = self.hashes.get(domain, message);
        self.secrets.bls.sign_hashed(&h).to_bytes().to_vec()
    }

    fn verify_multi_share(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let (Some(pk), Ok(sig)) = (
            self.keys.bls.get(signer as usize),
            BlsSignature::from_bytes(signature),
        ) else {
            return false;
        };
        pk.verify_hashed(&self.hashes.get(domain, message), &sig)
            .is_ok()
    }

    fn aggregate_multi(&self, shares: &[&[u8]]) -> Option<Vec<u8>> {
        // Checked as a whole by `verify_multi` (subgroup included) before anyone uses it.
        bls::aggregate_encoded(shares).ok().map(|s| s.to_vec())
    }

    fn verify_multi(
        &self,
        signers: &[NodeIndex],
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let pks: Option<Vec<BlsPublicKey>> = signers
            .iter()
            .map(|i| self.keys.bls.get(*i as usize).copied())
            .collect();
        let (Some(pks), Ok(sig)) = (pks, BlsSignature::from_bytes(signature)) else {
            return false;
        };
        verify_aggregate_hashed(&pks, &self.hashes.get(domain, message), &sig).is_ok()
    }

    fn sign_threshold(&self, which: Threshold, domain: Domain, message: &[u8]) -> Vec<u8> {
        let share = match which {
            Threshold::Low => &self.secrets.low_share,
            Threshold::High => &self.secrets.high_share,
        };
        let h = self.hashes.get(domain, message);
        share.key.sign_hashed(&h).to_bytes().to_vec()
    }

    fn verify_threshold_share(
        &self,
        which: Threshold,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let (Some(key), Ok(signature)) = (
            self.threshold_key(which).share_keys.get(signer as usize),
            BlsSignature::from_bytes(signature),
        ) else {
            return false;
        };
        key.verify_hashed(&self.hashes.get(domain, message), &signature)
            .is_ok()
    }

    fn combine_threshold(
        &self,
        which: Threshold,
        shares: &[(NodeIndex, &[u8])],
    ) -> Option<Vec<u8>> {
        // Checked as a whole by `verify_threshold` (subgroup included) before anyone uses it.
        self.threshold_key(which)
            .combine_encoded(shares)
            .ok()
            .map(|s| s.to_vec())
    }

    fn verify_threshold(
        &self,
        which: Threshold,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let Ok(sig) = BlsSignature::from_bytes(signature) else {
            return false;
        };
        self.threshold_key(which)
            .group_key
            .verify_hashed(&self.hashes.get(domain, message), &sig)
            .is_ok()
    }

    fn resharing_secrets(&self) -> Option<ResharingSecrets<'_>> {
        Some(ResharingSecrets {
            low_share: &self.secrets.low_share,
            high_share: &self.secrets.high_share,
            encryption: self.secrets.encryption.as_ref(),
        })
    }
}

impl<T: ConsensusCrypto + ?Sized> ConsensusCrypto for Box<T> {
    fn sign_node(&self, domain: Domain, message: &[u8]) -> Vec<u8> {
        (**self).sign_node(domain, message)
    }
    fn verify_node(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        (**self).verify_node(signer, domain, message, signature)
    }
    fn sign_multi(&self, domain: Domain, message: &[u8]) -> Vec<u8> {
        (**self).sign_multi(domain, message)
    }
    fn verify_multi_share(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        (**self).verify_multi_share(signer, domain, message, signature)
    }
    fn aggregate_multi(&self, shares: &[&[u8]]) -> Option<Vec<u8>> {
        (**self).aggregate_multi(shares)
    }
    fn verify_multi(
        &self,
        signers: &[NodeIndex],
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        (**self).verify_multi(signers, domain, message, signature)
    }
    fn sign_threshold(&self, which: Threshold, domain: Domain, message: &[u8]) -> Vec<u8> {
        (**self).sign_threshold(which, domain, message)
    }
    fn verify_threshold_share(
        &self,
        which: Threshold,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        (**self).verify_threshold_share(which, signer, domain, message, signature)
    }
    fn combine_threshold(
        &self,
        which: Threshold,
        shares: &[(NodeIndex, &[u8])],
    ) -> Option<Vec<u8>> {
        (**self).combine_threshold(which, shares)
    }
    fn verify_threshold(
        &self,
        which: Threshold,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        (**self).verify_threshold(which, domain, message, signature)
    }
    fn verify_member(
        &self,
        node_key: &[u8; 32],
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        (**self).verify_member(node_key, domain, message, signature)
    }
    fn resharing_secrets(&self) -> Option<ResharingSecrets<'_>> {
        (**self).resharing_secrets()
    }
}
