use crate::package::CupError;
use crypto::{
    reshare::{EncryptionPublicKey, Justification, ReshareDealing},
    threshold::ThresholdPublicKey,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use types::{CryptoHash, Height, NodeId, RegistryVersion, ReplicaVersion, SubnetId};

const CONTENT_MAGIC: &[u8; 4] = b"CUPC";
const CONTENT_FORMAT: u8 = 1;

/// The random beacon at the CUP height (a low-threshold signature, or for a registry CUP
/// a seed derived from registry contents). At most 96 bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RandomBeacon(pub Vec<u8>);

impl RandomBeacon {
    pub const MAX_BYTES: usize = 96;
}

impl fmt::Debug for RandomBeacon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RandomBeacon({})", hex::encode(&self.0))
    }
}

types::extensible_record! {
    /// What consensus needs to resume at `height + 1`, and what the orchestrator needs to
    /// pick the version. The summary block itself is not embedded: its encoding belongs to
    /// one release's consensus, while the CUP must be read by the next release too; the
    /// block's hash, time and pinned registry version are what resuming needs.
    pub struct CupContent {
        1 required subnet_id: SubnetId,
        /// The summary block's height.
        2 required height: Height,
        /// The summary block's hash: the parent of the first block after the CUP.
        3 required block_hash: CryptoHash,
        /// The summary block's time (ns since the Unix epoch); later blocks are later.
        4 required block_time_ns: u64,
        /// The registry version pinned by the summary block: it decides membership, keys
        /// and the replica version for the interval that starts here.
        5 required registry_version: RegistryVersion,
        /// The replica version that produced the summary block.
        6 required replica_version: ReplicaVersion,
        7 required random_beacon: RandomBeacon,
        /// The hash of the replicated state after executing the block at `height`.
        8 required state_hash: CryptoHash,
        /// The oldest registry version the subnet may still need (for node removal).
        9 required oldest_registry_version_in_use: RegistryVersion,
        /// The replica version that runs from this CUP on. Absent (CUPs of releases
        /// before readiness gating, and registry CUPs): the subnet's version at
        /// `registry_version`. A subnet that pinned a new version without a quorum of
        /// nodes ready for it keeps running the old one, and says so here.
        10 optional next_replica_version: Option<ReplicaVersion>,
        /// The committee that holds the subnet's threshold keys from this CUP on, when
        /// the subnet reshared them (absent: the registry's key holders and keys, dealt
        /// at genesis). Every later CUP carries it on until the next resharing.
        11 optional committee: Option<CupCommittee>,
    }
}

/// The committee a resharing dealt the subnet's threshold keys to: its nodes in share
/// order, its public keys (the group keys are genesis's), and the dealings it chose, from
/// which each member computes its own shares with nothing but this CUP and its dealing
/// encryption key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CupCommittee {
    pub nodes: Vec<NodeId>,
    pub low: ThresholdPublicKey,
    pub high: ThresholdPublicKey,
    pub dealt: DealtKeys,
}

/// What a member needs to open its values: the resharing's context hash, the sharing
/// it reshared, the receivers' encryption keys, and the chosen dealings of each key (in
/// dealer order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealtKeys {
    pub context: CryptoHash,
    pub old_low: ThresholdPublicKey,
    pub old_high: ThresholdPublicKey,
    pub receivers: Vec<EncryptionPublicKey>,
    pub low: Vec<ReshareDealing>,
    pub high: Vec<ReshareDealing>,
    /// The chosen dealers' answers to complaints: a receiver whose value did not open
    /// reads it here.
    pub low_answers: Vec<Justification>,
    pub high_answers: Vec<Justification>,
}

impl CupContent {
    /// The canonical encoding (the bytes that are signed).
    pub fn encode(&self) -> Vec<u8> {
        let record = self.encode_record();
        let mut out = Vec::with_capacity(5 + record.len());
        out.extend_from_slice(CONTENT_MAGIC);
        out.push(CONTENT_FORMAT);
        out.extend_from_slice(&record);
        out
    }

    /// Decodes content bytes; unknown fields go to `extensions`.
    pub fn decode(bytes: &[u8]) -> Result<Self, CupError> {
        let body = bytes
            .strip_prefix(CONTENT_MAGIC.as_slice())
            .ok_or(CupError::Malformed(
                "content does not start with \"CUPC\"".into(),
            ))?;
        let (&format, body) = body
            .split_first()
            .ok_or(CupError::Malformed("content has no format byte".into()))?;
        if format != CONTENT_FORMAT {
            return Err(CupError::UnsupportedFormat {
                what: "content",
                found: format,
            });
        }
        let content = Self::decode_record(body)?;
        if content.random_beacon.0.len() > RandomBeacon::MAX_BYTES {
            return Err(CupError::Malformed(format!(
                "random beacon of {} bytes (at most {})",
                content.random_beacon.0.len(),
                RandomBeacon::MAX_BYTES
            )));
        }
        Ok(content)
    }

    /// The replica version that runs from this CUP, given the one the subnet record
    /// names at the CUP's registry version.
    pub fn version_to_run<'a>(&'a self, registry_says: &'a ReplicaVersion) -> &'a ReplicaVersion {
        self.next_replica_version.as_ref().unwrap_or(registry_says)
    }

    pub fn param(&self) -> crate::CupParam {
        crate::CupParam {
            height: self.height,
            registry_version: self.registry_version,
        }
    }
}
