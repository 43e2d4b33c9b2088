//! `MemoCrypto`: the real signatures ([`RealCrypto`]), with the answers of its pure
//! functions (every check, every combination and aggregation) remembered across the
//! simulated nodes of one seed. Each is a function of its inputs alone, so a node that
//! asks what another already computed gets the same answer it would compute; signing
//! stays each node's own. With all the nodes on one thread, this is the difference
//! between checking a combined beacon once and checking it n times.

use consensus::{ConsensusCrypto, RealCrypto, Threshold, artifact::NodeIndex};
use crypto::hashed::MessageHashes;
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use types::domain::Domain;

/// Answers remembered before the memo is cleared (a bound on its memory: about 100 bytes
/// each).
const MAX_ANSWERS: usize = 200_000;

/// An answer by the hash of its question: a check's is `Some(empty)` when it passed.
type Answers = HashMap<[u8; 32], Option<Vec<u8>>>;

/// One seed's remembered answers, and its messages hashed to G2, shared by its nodes.
#[derive(Clone, Debug, Default)]
pub struct Memo {
    answers: Arc<Mutex<Answers>>,
    hashes: MessageHashes,
}

impl Memo {
    /// For each node's [`RealCrypto`]: a message is hashed to G2 once for all of them.
    pub fn hashes(&self) -> MessageHashes {
        self.hashes.clone()
    }

    fn get_or(&self, key: [u8; 32], compute: impl FnOnce() -> Option<Vec<u8>>) -> Option<Vec<u8>> {
        if let Some(a) = self.answers.lock().expect("memo").get(&key) {
            return a.clone();
        }
        let answer = compute();
        let mut m = self.answers.lock().expect("memo");
        if m.len() >= MAX_ANSWERS {
            m.clear();
        }
        m.insert(key, answer.clone());
        answer
    }

    fn check(&self, key: [u8; 32], check: impl FnOnce() -> bool) -> bool {
        self.get_or(key, || check().then(Vec::new)).is_some()
    }
}

fn key(op: &str, which: Option<Threshold>, parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update(op.as_bytes());
    d.update([match which {
        None => 0u8,
        Some(Threshold::Low) => 1,
        Some(Threshold::High) => 2,
    }]);
    for p in parts {
        d.update((p.len() as u64).to_be_bytes());
        d.update(p);
    }
    d.finalize().into()
}

fn indices(signers: &[NodeIndex]) -> Vec<u8> {
    signers.iter().flat_map(|i| i.to_be_bytes()).collect()
}

#[derive(Debug)]
pub struct MemoCrypto {
    real: RealCrypto,
    memo: Memo,
    /// Every public key the answers depend on, hashed: part of each memo key, so nodes
    /// on other keys never share an answer.
    keys_id: [u8; 32],
}

impl MemoCrypto {
    pub fn new(real: RealCrypto, memo: Memo) -> Self {
        let k = &real.keys;
        let mut d = Sha256::new();
        for e in &k.ed25519 {
            d.update(e.as_bytes());
        }
        for b in k.bls.iter().chain(
            [&k.low, &k.high]
                .into_iter()
                .flat_map(|t| std::iter::once(&t.group_key).chain(&t.share_keys)),
        ) {
            d.update(b.to_bytes());
        }
        d.update(k.low.threshold.to_be_bytes());
        d.update(k.high.threshold.to_be_bytes());
        let keys_id = d.finalize().into();
        Self {
            real,
            memo,
            keys_id,
        }
    }

    fn key(&self, op: &str, which: Option<Threshold>, parts: &[&[u8]]) -> [u8; 32] {
        let mut all = vec![self.keys_id.as_slice()];
        all.extend_from_slice(parts);
        key(op, which, &all)
    }
}

impl ConsensusCrypto for MemoCrypto {
    fn sign_node(&self, domain: Domain, message: &[u8]) -> Vec<u8> {
        self.real.sign_node(domain, message)
    }

    fn verify_node(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let k = self.key(
            "node",
            None,
            &[
                &signer.to_be_bytes(),
                domain.as_str().as_bytes(),
                message,
                signature,
            ],
        );
        self.memo.check(k, || {
            self.real.verify_node(signer, domain, message, signature)
        })
    }

    fn sign_multi(&self, domain: Domain, message: &[u8]) -> Vec<u8> {
        self.real.sign_multi(domain, message)
    }

    fn verify_multi_share(
        &self,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let k = self.key(
            "multi_share",
            None,
            &[
                &signer.to_be_bytes(),
                domain.as_str().as_bytes(),
                message,
                signature,
            ],
        );
        self.memo.check(k, || {
            self.real
                .verify_multi_share(signer, domain, message, signature)
        })
    }

    fn aggregate_multi(&self, shares: &[&[u8]]) -> Option<Vec<u8>> {
        self.memo.get_or(self.key("aggregate", None, shares), || {
            self.real.aggregate_multi(shares)
        })
    }

    fn verify_multi(
        &self,
        signers: &[NodeIndex],
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let k = self.key(
            "multi",
            None,
            &[
                &indices(signers),
                domain.as_str().as_bytes(),
                message,
                signature,
            ],
        );
        self.memo.check(k, || {
            self.real.verify_multi(signers, domain, message, signature)
        })
    }

    fn sign_threshold(&self, which: Threshold, domain: Domain, message: &[u8]) -> Vec<u8> {
        self.real.sign_threshold(which, domain, message)
    }

    fn verify_threshold_share(
        &self,
        which: Threshold,
        signer: NodeIndex,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let k = self.key(
            "threshold_share",
            Some(which),
            &[
                &signer.to_be_bytes(),
                domain.as_str().as_bytes(),
                message,
                signature,
            ],
        );
        self.memo.check(k, || {
            self.real
                .verify_threshold_share(which, signer, domain, message, signature)
        })
    }

    fn combine_threshold(
        &self,
        which: Threshold,
        shares: &[(NodeIndex, &[u8])],
    ) -> Option<Vec<u8>> {
        let signers: Vec<NodeIndex> = shares.iter().map(|(i, _)| *i).collect();
        let mut parts: Vec<&[u8]> = shares.iter().map(|(_, s)| *s).collect();
        let signers = indices(&signers);
        parts.push(&signers);
        self.memo
            .get_or(self.key("combine", Some(which), &parts), || {
                self.real.combine_threshold(which, shares)
            })
    }

    fn verify_threshold(
        &self,
        which: Threshold,
        domain: Domain,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let k = self.key(
            "threshold",
            Some(which),
            &[domain.as_str().as_bytes(), message, signature],
        );
        self.memo.check(k, || {
            self.real
                .verify_threshold(which, domain, message, signature)
        })
    }
}
