//! `SimStandInCrypto`: a cheap, deterministic stand-in for the consensus signatures, for
//! the simulator only. It is not secure (anyone can compute anyone's "signature"); it only
//! keeps the protocol's checks meaningful: a wrong or corrupted signature fails, shares
//! combine into one unique value, and an aggregate verifies only for its signer set.
//! No replica depends on this crate (a test checks `cargo tree -p replica`).

use consensus::{ConsensusCrypto, Threshold, artifact::NodeIndex};
use sha2::{Digest, Sha256};
use types::domain::Domain;

#[derive(Debug, Clone)]
pub struct SimStandInCrypto {
    pub me: NodeIndex,
    pub n: usize,
    pub low_threshold: usize,
    pub high_threshold: usize,
    /// Distinguishes subnets (as a key would).
    pub key_seed: u64,
}

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update((p.len() as u64).to_be_bytes());
        d.update(p);
    }
    d.finalize().into()
}

impl SimStandInCrypto {
    fn sig(&self, kind: &[u8], signer: NodeIndex, domain: Domain, m: &[u8]) -> [u8; 32] {
        h(&[
            kind,
            &self.key_seed.to_be_bytes(),
            &signer.to_be_bytes(),
            domain.as_str().as_bytes(),
            m,
        ])
    }
    fn group(&self, which: Threshold, domain: Domain, m: &[u8]) -> [u8; 32] {
        let w: &[u8] = if which == Threshold::Low {
            b"low"
        } else {
            b"high"
        };
        h(&[
            b"group",
            w,
            &self.key_seed.to_be_bytes(),
            domain.as_str().as_bytes(),
            m,
        ])
    }
    fn threshold(&self, which: Threshold) -> usize {
        if which == Threshold::Low {
            self.low_threshold
        } else {
            self.high_threshold
        }
    }
}

impl ConsensusCrypto for SimStandInCrypto {
    fn sign_node(&self, domain: Domain, message: &[u8]) -> Vec<u8> {
        self.sig(b"node", self.me, domain, message).to_vec()
    }
    fn verify_node(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        (signer as usize) < self.n && signature == self.sig(b"node", signer, domain, message)
    }
    fn sign_multi(&self, domain: Domain, message: &[u8]) -> Vec<u8> {
        self.sig(b"multi", self.me, domain, message).to_vec()
    }
    fn verify_multi_share(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        (signer as usize) < self.n && signature == self.sig(b"multi", signer, domain, message)
    }
    fn aggregate_multi(&self, shares: &[&[u8]]) -> Option<Vec<u8>> {
        // XOR: order-independent, and only the same signer set reproduces it.
        let mut acc = [0u8; 32];
        for s in shares {
            if s.len() != 32 {
                return None;
            }
            for (a, b) in acc.iter_mut().zip(s.iter()) {
                *a ^= b;
            }
        }
        (!shares.is_empty()).then(|| acc.to_vec())
    }
    fn verify_multi(
        &self,
        signers: &[NodeIndex],
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let shares: Vec<[u8; 32]> = signers
            .iter()
            .map(|i| self.sig(b"multi", *i, domain, message))
            .collect();
        let refs: Vec<&[u8]> = shares.iter().map(|s| s.as_slice()).collect();
        self.aggregate_multi(&refs).is_some_and(|a| a == signature)
    }
    fn sign_threshold(&self, which: Threshold, domain: Domain, message: &[u8]) -> Vec<u8> {
        // The share carries the group value and the signer's own tag.
        let mut out = self.group(which, domain, message).to_vec();
        out.extend_from_slice(&self.sig(b"share", self.me, domain, message));
        out
    }
    fn verify_threshold_share(
        &self,
        which: Threshold,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        signature.len() == 64
            && (signer as usize) < self.n
            && signature[..32] == self.group(which, domain, message)
            && signature[32..] == self.sig(b"share", signer, domain, message)
    }
    fn combine_threshold(
        &self,
        which: Threshold,
        shares: &[(NodeIndex, &[u8])],
    ) -> Option<Vec<u8>> {
        let distinct: std::collections::BTreeSet<NodeIndex> =
            shares.iter().map(|(i, _)| *i).collect();
        let first = shares.first()?.1.get(..32)?;
        let same = shares.iter().all(|(_, s)| s.get(..32) == Some(first));
        (same && distinct.len() >= self.threshold(which)).then(|| first.to_vec())
    }
    fn verify_threshold(
        &self,
        which: Threshold,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        signature == self.group(which, domain, message)
    }
}
