//! Blocks and the consensus artifacts nodes exchange, with what each signature covers.
//!
//! Every artifact travels in an [`Envelope`] that carries the protocol version (the
//! replica version that made it); a node drops envelopes of any other version. Every
//! signed message also binds the version, so an artifact of one release can never be
//! replayed as one of another.

use crate::resharing::ResharingItem;
use serde::{Deserialize, Serialize};
use types::{CryptoHash, Height, RegistryVersion, ReplicaVersion, codec, domain};

/// A node's position in the subnet (its share index).
pub type NodeIndex = u32;

/// What the maker saw when it made the block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockContext {
    pub time_ns: u64,
    /// The newest registry version the maker had held for long enough (stable), and at
    /// least the parent's. A summary block pins it for the interval it starts.
    pub registry_version: RegistryVersion,
    pub certified_height: Height,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub parent: CryptoHash,
    pub height: Height,
    pub rank: u32,
    pub maker: NodeIndex,
    pub context: BlockContext,
    pub is_summary: bool,
    /// Supplied and validated by the driver (ingress); empty in summary blocks and while
    /// halting.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Summary blocks only: the nodes ready for the replica version the block pins, when
    /// that is not the running one (at most one word per node, by signer). With `n - f`
    /// of them the summary halts this release; with fewer the subnet runs on.
    pub ready: Vec<Readiness>,
    /// Blocks of a resharing interval only: dealings, complaints and answers not yet on
    /// the chain, each in its window (`core::membership`).
    pub resharing: Vec<ResharingItem>,
}

/// The longest reason a readiness word carries.
pub const MAX_READINESS_REASON_BYTES: usize = 256;

/// A node's word on a release the registry deploys to its subnet: its orchestrator
/// fetched, verified and rehearsed it (`ready`), or could not, and why. Gossiped so that
/// every node can show every other's; only `ready` words go into summary blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub signer: NodeIndex,
    /// The signer's finalized height when it spoke: a later word replaces an earlier one.
    pub height: Height,
    pub version: ReplicaVersion,
    pub ready: bool,
    pub reason: String,
    /// The signer's ed25519 signature over `(protocol version, the fields above)`.
    pub signature: Vec<u8>,
}

impl Readiness {
    /// What the signature covers (before the protocol version is bound).
    pub fn signed_part(&self) -> (NodeIndex, Height, &ReplicaVersion, bool, &str) {
        (
            self.signer,
            self.height,
            &self.version,
            self.ready,
            &self.reason,
        )
    }
}

impl Block {
    pub fn hash(&self) -> CryptoHash {
        CryptoHash::of(domain::BLOCK_HASH, &codec::encode(self))
    }
}

/// The bytes a signature covers: the version, then the signed value, canonically encoded.
pub fn signed_bytes<T: Serialize>(version: &ReplicaVersion, value: &T) -> Vec<u8> {
    codec::encode(&(version, value))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockProposal {
    pub block: Block,
    /// The maker's ed25519 signature over `(version, block hash)`.
    pub signature: Vec<u8>,
}

/// A share (one signer) on `(version, height, hash)`: notarization or finalization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub height: Height,
    pub hash: CryptoHash,
    pub signer: NodeIndex,
    pub signature: Vec<u8>,
}

/// An aggregate of `n - f` shares: a notarization or a finalization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    pub height: Height,
    pub hash: CryptoHash,
    pub signers: Vec<NodeIndex>,
    pub signature: Vec<u8>,
}

/// A threshold share on `(version, height, value)`: beacon (value = previous beacon),
/// certification (value = state hash) or CUP (value = CUP content bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdShare {
    pub height: Height,
    pub value: Vec<u8>,
    pub signer: NodeIndex,
    pub signature: Vec<u8>,
}

/// A combined threshold signature on `(version, height, value)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdSigned {
    pub height: Height,
    pub value: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Artifact {
    Proposal(BlockProposal),
    BeaconShare(ThresholdShare),
    Beacon(ThresholdSigned),
    NotarizationShare(Share),
    Notarization(Aggregate),
    FinalizationShare(Share),
    Finalization(Aggregate),
    CertificationShare(ThresholdShare),
    Certification(ThresholdSigned),
    CupShare(ThresholdShare),
    /// A CUP: `value` is the CUP content bytes, signed like a CUP file's signature.
    Cup(ThresholdSigned),
    /// "Send me what you have at this height": blocks, notarizations, finalization; or
    /// your CUP if the height is below it.
    Request {
        height: Height,
    },
    /// A node's readiness for a deployed release (not pooled by height).
    Readiness(Readiness),
    /// A dealing, complaint or answer of the resharing under way (not pooled by
    /// height: `height` is the summary that started the resharing).
    Resharing {
        height: Height,
        item: ResharingItem,
    },
}

impl Artifact {
    pub fn height(&self) -> Height {
        match self {
            Self::Proposal(p) => p.block.height,
            Self::NotarizationShare(s) | Self::FinalizationShare(s) => s.height,
            Self::Notarization(a) | Self::Finalization(a) => a.height,
            Self::BeaconShare(s) | Self::CertificationShare(s) | Self::CupShare(s) => s.height,
            Self::Beacon(t) | Self::Certification(t) | Self::Cup(t) => t.height,
            Self::Request { height } => *height,
            Self::Readiness(r) => r.height,
            Self::Resharing { height, .. } => *height,
        }
    }

    /// The member whose share this is (`None` for anything but a share).
    pub fn share_signer(&self) -> Option<NodeIndex> {
        match self {
            Self::NotarizationShare(s) | Self::FinalizationShare(s) => Some(s.signer),
            Self::BeaconShare(s) | Self::CertificationShare(s) | Self::CupShare(s) => {
                Some(s.signer)
            }
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Proposal(_) => "proposal",
            Self::BeaconShare(_) => "beacon_share",
            Self::Beacon(_) => "beacon",
            Self::NotarizationShare(_) => "notarization_share",
            Self::Notarization(_) => "notarization",
            Self::FinalizationShare(_) => "finalization_share",
            Self::Finalization(_) => "finalization",
            Self::CertificationShare(_) => "certification_share",
            Self::Certification(_) => "certification",
            Self::CupShare(_) => "cup_share",
            Self::Cup(_) => "cup",
            Self::Request { .. } => "request",
            Self::Readiness(_) => "readiness",
            Self::Resharing { item, .. } => item.kind(),
        }
    }
}

/// An artifact as sent: tagged with the protocol version that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: ReplicaVersion,
    pub artifact: Artifact,
}

/// The largest envelope a node decodes.
pub const MAX_ENVELOPE_BYTES: usize = 8 * 1024 * 1024;

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(bytes, MAX_ENVELOPE_BYTES)
    }
}
