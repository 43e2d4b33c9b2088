//! `VerifiedSignatures`: the updates whose signature this node already checked, so that
//! an update is verified once per node, not once when it enters the pool and again when
//! its block executes.
//!
//! Determinism: the key is the hash of the message id *and* the signature bytes, so a hit
//! means these exact bytes verified before; strict ed25519 verification of the same bytes
//! under the same key always gives the same answer, so a node with the cache executes a
//! block exactly as a node without it. Everything else `validate` checks (network, sizes,
//! expiry against the block time) is checked every time.

use super::{IngressError, SignedIngress};
use sha2::{Digest, Sha256};
use std::collections::{HashSet, VecDeque};

/// Signatures remembered: more than a full ingress pool (so an update is still known
/// when its block executes) and about 4 MiB of memory.
pub const MAX_VERIFIED_SIGNATURES: usize = 1 << 16;

#[derive(Debug)]
pub struct VerifiedSignatures {
    known: HashSet<[u8; 32]>,
    /// Oldest first: what is forgotten when the set is full.
    order: VecDeque<[u8; 32]>,
    capacity: usize,
    /// Checks answered from memory.
    pub hits: u64,
}

impl Default for VerifiedSignatures {
    fn default() -> Self {
        Self::with_capacity(MAX_VERIFIED_SIGNATURES)
    }
}

impl VerifiedSignatures {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            known: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            hits: 0,
        }
    }

    fn key(m: &SignedIngress) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(m.id().0);
        h.update(m.signature.0);
        h.finalize().into()
    }

    /// Checks `m`'s signature, from memory when these bytes verified before.
    pub fn verify(&mut self, m: &SignedIngress) -> Result<(), IngressError> {
        let key = Self::key(m);
        if self.known.contains(&key) {
            self.hits += 1;
            return Ok(());
        }
        m.verify_signature()?;
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.known.remove(&old);
        }
        self.known.insert(key);
        self.order.push_back(key);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}
