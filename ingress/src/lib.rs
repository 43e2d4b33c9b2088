//! Signed ingress: the update message users send to a replica, its id, and the checks
//! every replica makes of it (the pool and execution live in the replica). Its own crate
//! so that a client (`nns`, in the registry crate, which the replica builds on) signs
//! updates without linking a replica.
//!
//! An update is `(network, sender key, nonce, expiry, operation)` signed by the sender
//! (domain `INGRESS`). Its id is the hash of that content. It is valid only on the network
//! it names (the [`NetworkId`] of the registry's root key, which a replica reads from its
//! node directory and serves as `network_id` in its status), while `expiry` has not
//! passed, and executes at most once: a replay (same id) is refused by the pool and
//! skipped by execution, which records executed ids in the replicated state until they
//! expire. So an update signed for one network (a test network, say) is never valid on
//! another that knows the same user key.

use crypto::ed25519::{Ed25519KeyPair, Ed25519PublicKey, Ed25519Signature};
use serde::{Deserialize, Serialize};
use types::{CryptoHash, NetworkId, codec, domain};

/// The longest user key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The furthest in the future an expiry may be (5 minutes, as on the Internet Computer).
pub const MAX_EXPIRY_AHEAD_NS: u64 = 5 * 60 * 1_000_000_000;

/// The update methods. The encoding lists every method of every release, so a client
/// builds any of them; a release refuses a method it does not have (the `has_append`
/// of [`SignedIngress::check_fields`]). New methods go at the end: the variant index is
/// the wire tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Appends `value` to the key's value (creating it). The next release's method.
    Append {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// A governance proposal for the registry an NNS subnet keeps in its state (issue
    /// 19): the canonical encoding of the neuron-signed submission
    /// (`registry::governance::SignedSubmission`). Opaque here, as a call's argument:
    /// the NNS subnet's execution decodes and checks it. Another subnet skips it.
    Propose {
        #[serde(with = "serde_bytes")]
        submission: Vec<u8>,
    },
    /// A neuron's vote on a proposal (an encoded `registry::governance::SignedBallot`),
    /// as [`Operation::Propose`].
    Vote {
        #[serde(with = "serde_bytes")]
        ballot: Vec<u8>,
    },
}

impl Operation {
    /// The user key the update writes (`None` for a governance call, which writes the
    /// registry).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Put { key, .. } | Self::Delete { key } | Self::Append { key, .. } => Some(key),
            Self::Propose { .. } | Self::Vote { .. } => None,
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Self::Put { .. } => "put",
            Self::Delete { .. } => "delete",
            Self::Append { .. } => "append",
            Self::Propose { .. } => "propose",
            Self::Vote { .. } => "vote",
        }
    }

    /// Whether this is a governance call (executed only by a subnet keeping the registry).
    pub fn is_governance(&self) -> bool {
        matches!(self, Self::Propose { .. } | Self::Vote { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingress {
    /// The network the update is for; every other network refuses it.
    pub network: NetworkId,
    pub sender: Ed25519PublicKey,
    pub nonce: u64,
    pub expiry_ns: u64,
    pub operation: Operation,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIngress {
    pub ingress: Ingress,
    pub signature: Ed25519Signature,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    #[error("signed for network {signed_for}, but this is network {expected}")]
    WrongNetwork {
        signed_for: NetworkId,
        expected: NetworkId,
    },
    #[error("the signature does not match the sender key")]
    BadSignature,
    #[error("expired at {expiry_ns} ns (now {now_ns} ns)")]
    Expired { expiry_ns: u64, now_ns: u64 },
    #[error("expiry {expiry_ns} ns is more than 5 minutes ahead of now ({now_ns} ns)")]
    ExpiryTooFar { expiry_ns: u64, now_ns: u64 },
    #[error("key must be 1 to {MAX_KEY_BYTES} bytes, got {0}")]
    BadKey(usize),
    #[error("value of {0} bytes exceeds {MAX_VALUE_BYTES}")]
    ValueTooLarge(usize),
    #[error("message {0} was already received")]
    Duplicate(CryptoHash),
    #[error("method {0} is not supported by this replica release")]
    UnsupportedMethod(&'static str),
    #[error(
        "this subnet does not keep the registry: send governance calls ({0}) to a node of the NNS subnet"
    )]
    NotNns(&'static str),
    #[error("the ingress pool is full ({messages} messages, {bytes} bytes)")]
    PoolFull { messages: usize, bytes: usize },
    #[error(
        "this sender already has {messages} messages ({bytes} bytes) waiting: its share of the pool is full, try again after some execute"
    )]
    SenderShareFull { messages: usize, bytes: usize },
    #[error(
        "this sender's values already take {stored} bytes of the state; with this update they would pass the quota of {quota} bytes (delete some first)"
    )]
    QuotaExceeded { stored: u64, quota: u64 },
}

impl SignedIngress {
    pub fn sign(ingress: Ingress, key: &Ed25519KeyPair) -> Self {
        let signature = key.sign(domain::INGRESS, &codec::encode(&ingress));
        Self { ingress, signature }
    }

    /// The canonical encoding: an update's HTTP body.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The message id: the hash of the signed content.
    pub fn id(&self) -> CryptoHash {
        CryptoHash::of(domain::INGRESS, &codec::encode(&self.ingress))
    }

    pub fn size(&self) -> usize {
        codec::encode(self).len()
    }

    /// The sender's signature over the content.
    pub fn verify_signature(&self) -> Result<(), IngressError> {
        self.ingress
            .sender
            .verify(
                domain::INGRESS,
                &codec::encode(&self.ingress),
                &self.signature,
            )
            .map_err(|_| IngressError::BadSignature)
    }

    /// Everything a replica checks of an update but its signature: the network against
    /// `network` (the node's), the key and value sizes, the method (`has_append`: this
    /// release has the append method), the expiry against `now_ns` (the block time when
    /// executing).
    pub fn check_fields(
        &self,
        now_ns: u64,
        network: &NetworkId,
        has_append: bool,
    ) -> Result<(), IngressError> {
        let i = &self.ingress;
        if i.network != *network {
            return Err(IngressError::WrongNetwork {
                signed_for: i.network,
                expected: *network,
            });
        }
        if let Some(key) = i.operation.key()
            && (key.is_empty() || key.len() > MAX_KEY_BYTES)
        {
            return Err(IngressError::BadKey(key.len()));
        }
        if matches!(i.operation, Operation::Append { .. }) && !has_append {
            return Err(IngressError::UnsupportedMethod(i.operation.method()));
        }
        // A proposal carries records (a version's URLs, node lists): as large as a
        // value at most.
        if let Operation::Put { value, .. }
        | Operation::Append { value, .. }
        | Operation::Propose {
            submission: value, ..
        }
        | Operation::Vote { ballot: value } = &i.operation
            && value.len() > MAX_VALUE_BYTES
        {
            return Err(IngressError::ValueTooLarge(value.len()));
        }
        if i.expiry_ns < now_ns {
            return Err(IngressError::Expired {
                expiry_ns: i.expiry_ns,
                now_ns,
            });
        }
        if i.expiry_ns > now_ns.saturating_add(MAX_EXPIRY_AHEAD_NS) {
            return Err(IngressError::ExpiryTooFar {
                expiry_ns: i.expiry_ns,
                now_ns,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(operation: Operation) -> SignedIngress {
        let key = Ed25519KeyPair::from_seed(&[3; 32]);
        let ingress = Ingress {
            network: NetworkId([1; 32]),
            sender: key.public_key(),
            nonce: 1,
            expiry_ns: 10,
            operation,
        };
        SignedIngress::sign(ingress, &key)
    }

    #[test]
    fn governance_calls_are_the_fourth_and_fifth_methods_and_bounded_like_values() {
        // The variant index is the wire tag: releases that know only the first three
        // methods decode their updates unchanged.
        let tag = |op: Operation| codec::encode(&op)[..4].to_vec();
        assert_eq!(
            tag(Operation::Propose { submission: vec![] }),
            3u32.to_be_bytes()
        );
        assert_eq!(tag(Operation::Vote { ballot: vec![] }), 4u32.to_be_bytes());
        let net = NetworkId([1; 32]);
        let fits = signed(Operation::Vote {
            ballot: vec![0; MAX_VALUE_BYTES],
        });
        assert_eq!(fits.check_fields(5, &net, false), Ok(()));
        assert_eq!(fits.verify_signature(), Ok(()));
        let large = signed(Operation::Propose {
            submission: vec![0; MAX_VALUE_BYTES + 1],
        });
        assert_eq!(
            large.check_fields(5, &net, false),
            Err(IngressError::ValueTooLarge(MAX_VALUE_BYTES + 1))
        );
        let append = signed(Operation::Append {
            key: "k".into(),
            value: vec![1],
        });
        assert_eq!(
            append.check_fields(5, &net, false),
            Err(IngressError::UnsupportedMethod("append"))
        );
        assert_eq!(append.check_fields(5, &net, true), Ok(()));
    }
}
