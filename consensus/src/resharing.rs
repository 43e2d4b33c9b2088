//! The resharing a summary block starts (issue 18), as pure functions: who deals to
//! whom, what binds a dealing to this one resharing, and which dealings the next summary
//! chooses. Not yet driven by [`crate::Consensus`]; ARCHITECTURE.md ("Decisions") has the
//! design this serves.
//!
//! A summary at height `h` that pins a registry version whose members differ from the
//! running committee starts a [`Plan`]: every committee member deals both threshold keys
//! (low `f' + 1`, high `n' - f'` of the new size) to the members, in the members' order;
//! the next summary takes the [`Outcome`] of the dealings, complaints and answers its
//! chain carries: per key, the `t` (old threshold) lowest qualified dealers, and the new
//! committee's public keys, whose group keys are the old ones.

use crypto::{
    CryptoError,
    reshare::{EncryptionPublicKey, Justification, Reshare, ReshareDealing},
    threshold::{SecretShare, ThresholdPublicKey, high_threshold, low_threshold},
};
use serde::{Deserialize, Serialize};
use types::{CryptoHash, Height, NodeId, RegistryVersion, SubnetId, codec, domain};

use crate::Threshold;

/// The nodes that hold a subnet's threshold keys, in share-index order, with the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    pub nodes: Vec<NodeId>,
    pub low: ThresholdPublicKey,
    pub high: ThresholdPublicKey,
}

/// One resharing: from the running committee to the members a summary pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub subnet: SubnetId,
    /// The summary block that started it.
    pub height: Height,
    pub registry_version: RegistryVersion,
    pub from: Committee,
    /// The new committee, in the registry's member order (its share indices).
    pub to: Vec<NodeId>,
    /// Their dealing encryption keys, in the same order.
    pub to_keys: Vec<EncryptionPublicKey>,
    /// Hash of everything above: what every dealing of this resharing is bound to.
    context: CryptoHash,
}

/// A committee member's dealing of both keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dealing {
    pub dealer: u32,
    pub low: ReshareDealing,
    pub high: ReshareDealing,
}

/// A receiver's complaint about a dealer's value for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complaint {
    pub dealer: u32,
    pub receiver: u32,
    pub key: Threshold,
}

/// A dealer's answer to a complaint about one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub key: Threshold,
    pub justification: Justification,
}

/// What the next summary takes from a resharing's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub low_dealers: Vec<u32>,
    pub high_dealers: Vec<u32>,
    /// The new committee, its share public keys, the old group keys.
    pub committee: Committee,
}

/// Why a resharing cannot start or finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResharingError {
    #[error("the new committee is empty")]
    Empty,
    #[error("{keys} encryption keys for {members} members")]
    KeyCount { keys: usize, members: usize },
    #[error("the new committee names node {0} twice")]
    Duplicate(NodeId),
    #[error("not enough qualified dealers for the {key:?} key: {got} of {needed}")]
    NotEnough {
        key: Threshold,
        got: usize,
        needed: usize,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl Plan {
    /// The resharing from `from` to `to` started by the summary at `height`, or `None`
    /// when the committee does not change.
    pub fn new(
        subnet: SubnetId,
        height: Height,
        registry_version: RegistryVersion,
        from: Committee,
        to: Vec<NodeId>,
        to_keys: Vec<EncryptionPublicKey>,
    ) -> Result<Option<Self>, ResharingError> {
        if to == from.nodes {
            return Ok(None);
        }
        if to.is_empty() {
            return Err(ResharingError::Empty);
        }
        if to_keys.len() != to.len() {
            return Err(ResharingError::KeyCount {
                keys: to_keys.len(),
                members: to.len(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(d) = to.iter().find(|n| !seen.insert(**n)) {
            return Err(ResharingError::Duplicate(*d));
        }
        let keys: Vec<[u8; 32]> = to_keys.iter().map(|k| k.0).collect();
        let context = CryptoHash::of(
            domain::RESHARING,
            &codec::encode(&(
                subnet,
                height,
                registry_version,
                &from.nodes,
                from.high.group_key.to_bytes().to_vec(),
                &to,
                keys,
            )),
        );
        Ok(Some(Self {
            subnet,
            height,
            registry_version,
            from,
            to,
            to_keys,
            context,
        }))
    }

    /// The resharing of one key.
    pub fn reshare(&self, key: Threshold) -> Reshare<'_> {
        let m = self.to.len();
        let (old, threshold) = match key {
            Threshold::Low => (&self.from.low, low_threshold(m)),
            Threshold::High => (&self.from.high, high_threshold(m)),
        };
        Reshare {
            context: &self.context.0,
            old,
            receivers: &self.to_keys,
            threshold: threshold as u32,
        }
    }

    /// This committee member's dealing (derived from its shares: the same every time).
    pub fn deal(&self, low: &SecretShare, high: &SecretShare) -> Result<Dealing, CryptoError> {
        Ok(Dealing {
            dealer: high.index,
            low: self.reshare(Threshold::Low).deal_derived(low)?,
            high: self.reshare(Threshold::High).deal_derived(high)?,
        })
    }

    /// A dealing's public checks, for both keys; the dealer's index agrees across them.
    pub fn verify_dealing(&self, d: &Dealing) -> Result<(), CryptoError> {
        if d.low.dealer != d.dealer || d.high.dealer != d.dealer {
            return Err(CryptoError::Malformed {
                what: "dealing",
                reason: "its keys' dealings name other dealers".into(),
            });
        }
        self.reshare(Threshold::Low).verify_public(&d.low)?;
        self.reshare(Threshold::High).verify_public(&d.high)
    }

    /// The outcome of the chain's dealings (first one per dealer counts), complaints
    /// and answers: per key, the lowest `t` qualified dealers, and the keys they give.
    pub fn outcome(
        &self,
        dealings: &[Dealing],
        complaints: &[Complaint],
        answers: &[Answer],
    ) -> Result<Outcome, ResharingError> {
        // The first dealing of each dealer, checked once for both keys.
        let mut firsts: Vec<&Dealing> = Vec::new();
        for d in dealings {
            if !firsts.iter().any(|f| f.dealer == d.dealer) {
                firsts.push(d);
            }
        }
        firsts.retain(|d| self.verify_dealing(d).is_ok());
        let chosen = |key: Threshold| -> Result<(Vec<u32>, ThresholdPublicKey), ResharingError> {
            let r = self.reshare(key);
            let of_key: Vec<&ReshareDealing> = firsts
                .iter()
                .map(|d| match key {
                    Threshold::Low => &d.low,
                    Threshold::High => &d.high,
                })
                .collect();
            let against: Vec<(u32, u32)> = complaints
                .iter()
                .filter(|c| c.key == key)
                .map(|c| (c.dealer, c.receiver))
                .collect();
            let justified: Vec<Justification> = answers
                .iter()
                .filter(|a| a.key == key)
                .map(|a| a.justification.clone())
                .collect();
            let qualified = r.qualified(&of_key, &against, &justified);
            let needed = r.old.threshold as usize;
            let dealers =
                r.choose(qualified.iter().copied())
                    .map_err(|_| ResharingError::NotEnough {
                        key,
                        got: qualified.len(),
                        needed,
                    })?;
            let picked: Vec<&ReshareDealing> = dealers
                .iter()
                .filter_map(|i| of_key.iter().find(|d| d.dealer == *i).copied())
                .collect();
            Ok((dealers, r.public_key(&picked)?))
        };
        let (low_dealers, low) = chosen(Threshold::Low)?;
        let (high_dealers, high) = chosen(Threshold::High)?;
        Ok(Outcome {
            low_dealers,
            high_dealers,
            committee: Committee {
                nodes: self.to.clone(),
                low,
                high,
            },
        })
    }
}

#[cfg(test)]
mod tests;
