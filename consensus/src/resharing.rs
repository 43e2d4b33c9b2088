//! The resharing a summary block starts (issue 18), as pure functions: who deals to
//! whom, what binds a dealing to this one resharing, which dealings the next summary
//! chooses, and how a member of the new committee computes its shares from the CUP.
//! [`crate::Consensus`] drives it (`core::membership`).
//!
//! A summary at height `h` that pins a registry version whose members differ from the
//! running committee starts a [`Plan`]: every committee member deals both threshold keys
//! (low `f' + 1`, high `n' - f'` of the new size) to the members, in the members' order;
//! the next summary takes the [`Outcome`] of the dealings, complaints and answers its
//! chain carries: per key, the `t` (old threshold) lowest qualified dealers, and the new
//! committee's public keys, whose group keys are the old ones.

use crypto::{
    CryptoError,
    reshare::{
        EncryptionPublicKey, EncryptionSecretKey, Justification, OpenedValue, Reshare,
        ReshareDealing,
    },
    threshold::{SecretShare, ThresholdPublicKey, high_threshold, low_threshold},
};
use cup::{CupCommittee, DealtKeys};
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

/// A dealing as it travels and sits in blocks: signed by its dealer's node key over the
/// protocol version, the resharing's context and the dealing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDealing {
    pub dealing: Dealing,
    pub signature: Vec<u8>,
}

/// A complaint signed by its receiver's node key (the receiver need not be in the
/// committee that runs consensus: it may be joining).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedComplaint {
    pub complaint: Complaint,
    pub signature: Vec<u8>,
}

/// What a resharing puts into the blocks of its interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResharingItem {
    Dealing(SignedDealing),
    Complaint(SignedComplaint),
    /// Needs no signature: it checks against the dealing's commitments, and only the
    /// dealer or the receiver can know the value.
    Answer(Answer),
}

/// An item's identity in a chain: a dealer deals once, a complaint and its answer are
/// about one (dealer, receiver, key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ItemKey {
    Dealing(u32),
    Complaint(u32, u32, Threshold),
    Answer(u32, u32, Threshold),
}

impl ResharingItem {
    pub fn key(&self) -> ItemKey {
        match self {
            Self::Dealing(d) => ItemKey::Dealing(d.dealing.dealer),
            Self::Complaint(c) => {
                let c = &c.complaint;
                ItemKey::Complaint(c.dealer, c.receiver, c.key)
            }
            Self::Answer(a) => {
                ItemKey::Answer(a.justification.dealer, a.justification.receiver, a.key)
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dealing(_) => "dealing",
            Self::Complaint(_) => "complaint",
            Self::Answer(_) => "answer",
        }
    }
}

impl Dealing {
    pub fn of(&self, key: Threshold) -> &ReshareDealing {
        match key {
            Threshold::Low => &self.low,
            Threshold::High => &self.high,
        }
    }
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

    /// The hash every dealing and complaint of this resharing is bound to.
    pub fn context(&self) -> &CryptoHash {
        &self.context
    }

    /// The record a CUP carries for the new committee: its keys, and the chosen
    /// dealings with the answers about them, from which each member computes its shares.
    pub fn record(&self, out: &Outcome, dealings: &[Dealing], answers: &[Answer]) -> CupCommittee {
        let chosen = |key: Threshold, dealers: &[u32]| -> Vec<ReshareDealing> {
            dealers
                .iter()
                .filter_map(|i| dealings.iter().find(|d| d.dealer == *i))
                .map(|d| d.of(key).clone())
                .collect()
        };
        let answered = |key: Threshold, dealers: &[u32]| -> Vec<Justification> {
            answers
                .iter()
                .filter(|a| a.key == key && dealers.contains(&a.justification.dealer))
                .map(|a| a.justification.clone())
                .collect()
        };
        CupCommittee {
            nodes: out.committee.nodes.clone(),
            low: out.committee.low.clone(),
            high: out.committee.high.clone(),
            dealt: DealtKeys {
                context: self.context,
                old_low: self.from.low.clone(),
                old_high: self.from.high.clone(),
                receivers: self.to_keys.clone(),
                low: chosen(Threshold::Low, &out.low_dealers),
                high: chosen(Threshold::High, &out.high_dealers),
                low_answers: answered(Threshold::Low, &out.low_dealers),
                high_answers: answered(Threshold::High, &out.high_dealers),
            },
        }
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

/// What a member's API says of the resharing under way (`GET /api/v1/resharing`): what
/// a receiver outside the committee needs to find the resharing (it rebuilds the
/// [`Plan`] from its own registry copy and CUP, so a member cannot mislead it) and the
/// dealings on the member's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResharingView {
    /// The protocol version the dealings are signed under.
    pub version: types::ReplicaVersion,
    /// The summary that started the resharing, and the registry version it pinned.
    pub height: Height,
    pub registry_version: RegistryVersion,
    pub dealings: Vec<SignedDealing>,
}

/// The largest [`ResharingView`] a receiver reads.
pub const MAX_RESHARING_VIEW_BYTES: usize = 4 * 1024 * 1024;

/// The bytes a dealer signs (with its node key, `domain::RESHARING_DEALING`).
pub fn dealing_message(
    version: &types::ReplicaVersion,
    context: &CryptoHash,
    d: &Dealing,
) -> Vec<u8> {
    codec::encode(&(version, &(context, d)))
}

/// The bytes a receiver signs (with its node key, `domain::RESHARING_COMPLAINT`).
pub fn complaint_message(
    version: &types::ReplicaVersion,
    context: &CryptoHash,
    c: &Complaint,
) -> Vec<u8> {
    codec::encode(&(version, &(context, c)))
}

impl Plan {
    /// The keys of dealing `d` whose value to receiver `me` does not open (a complaint
    /// each), given that `d` passed its public checks.
    pub fn bad_values(&self, d: &Dealing, me: u32, key: &EncryptionSecretKey) -> Vec<Complaint> {
        [Threshold::Low, Threshold::High]
            .into_iter()
            .filter(|k| self.reshare(*k).open(d.of(*k), me, key).is_err())
            .map(|k| Complaint {
                dealer: d.dealer,
                receiver: me,
                key: k,
            })
            .collect()
    }

    /// A receiver's complaints about the dealings a member showed it: only about
    /// dealings signed by their dealer (`dealer_keys`, by old index) for this very
    /// resharing that pass the public checks, so no one can make it complain (and so
    /// have an honest dealer reveal its value) about anything else.
    pub fn receiver_complaints(
        &self,
        view: &ResharingView,
        dealer_keys: &[crypto::ed25519::Ed25519PublicKey],
        me: u32,
        key: &EncryptionSecretKey,
    ) -> Vec<Complaint> {
        let mut out = Vec::new();
        for sd in &view.dealings {
            let d = &sd.dealing;
            let Some(pk) = dealer_keys.get(d.dealer as usize) else {
                continue;
            };
            let Ok(sig) = crypto::ed25519::Ed25519Signature::from_bytes(&sd.signature) else {
                continue;
            };
            let m = dealing_message(&view.version, &self.context, d);
            if pk.verify(domain::RESHARING_DEALING, &m, &sig).is_err()
                || self.verify_dealing(d).is_err()
            {
                continue;
            }
            out.extend(self.bad_values(d, me, key));
        }
        out
    }
}

impl Committee {
    /// The committee a CUP names.
    pub fn from_cup(c: &CupCommittee) -> Self {
        Self {
            nodes: c.nodes.clone(),
            low: c.low.clone(),
            high: c.high.clone(),
        }
    }
}

/// Member `me`'s shares of both keys from a CUP's committee record: each chosen dealing
/// opened with its encryption key (or, where it complained, read from the dealer's
/// answer), combined, and checked against the share public keys the CUP names.
pub fn shares_from_cup(
    c: &CupCommittee,
    me: u32,
    key: &EncryptionSecretKey,
) -> Result<(SecretShare, SecretShare), ResharingError> {
    let m = c.nodes.len();
    if c.dealt.receivers.len() != m {
        return Err(ResharingError::KeyCount {
            keys: c.dealt.receivers.len(),
            members: m,
        });
    }
    let share = |which: Threshold| -> Result<SecretShare, ResharingError> {
        let (old, new, dealings, answers) = match which {
            Threshold::Low => (&c.dealt.old_low, &c.low, &c.dealt.low, &c.dealt.low_answers),
            Threshold::High => (
                &c.dealt.old_high,
                &c.high,
                &c.dealt.high,
                &c.dealt.high_answers,
            ),
        };
        let r = Reshare {
            context: &c.dealt.context.0,
            old,
            receivers: &c.dealt.receivers,
            threshold: new.threshold,
        };
        let opened = dealings
            .iter()
            .map(|d| {
                r.open(d, me, key).or_else(|e| {
                    answers
                        .iter()
                        .find(|j| j.dealer == d.dealer && j.receiver == me)
                        .ok_or(e)
                        .and_then(|j| r.check_justification(d, j))
                })
            })
            .collect::<Result<Vec<OpenedValue>, CryptoError>>()?;
        let share = r.combine(me, &opened)?;
        if new.share_keys.get(me as usize) != Some(&share.key.public_key()) {
            return Err(ResharingError::Crypto(CryptoError::Malformed {
                what: "reshared share",
                reason: format!("member {me}'s share does not match the CUP's share key"),
            }));
        }
        Ok(share)
    };
    Ok((share(Threshold::Low)?, share(Threshold::High)?))
}

#[cfg(test)]
mod tests;
