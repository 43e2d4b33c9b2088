use crate::package::CupError;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt};
use types::{
    CryptoHash, Height, RegistryVersion, ReplicaVersion, SubnetId,
    codec::{Fields, FieldsWriter},
};

const CONTENT_MAGIC: &[u8; 4] = b"CUPC";
const CONTENT_FORMAT: u8 = 1;

/// Field tags of the content record. Never reuse a tag.
mod tag {
    pub const SUBNET_ID: u16 = 1;
    pub const HEIGHT: u16 = 2;
    pub const BLOCK_HASH: u16 = 3;
    pub const BLOCK_TIME_NS: u16 = 4;
    pub const REGISTRY_VERSION: u16 = 5;
    pub const REPLICA_VERSION: u16 = 6;
    pub const RANDOM_BEACON: u16 = 7;
    pub const STATE_HASH: u16 = 8;
    pub const OLDEST_REGISTRY_VERSION_IN_USE: u16 = 9;
    pub const KNOWN: &[u16] = &[1, 2, 3, 4, 5, 6, 7, 8, 9];
}

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

/// What consensus needs to resume at `height + 1`, and what the orchestrator needs to
/// pick the version. The summary block itself is not embedded: its encoding belongs to
/// one release's consensus, while the CUP must be read by the next release too; the
/// block's hash, time and pinned registry version are what resuming needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CupContent {
    pub subnet_id: SubnetId,
    /// The summary block's height.
    pub height: Height,
    /// The summary block's hash: the parent of the first block after the CUP.
    pub block_hash: CryptoHash,
    /// The summary block's time (ns since the Unix epoch); block times after it are later.
    pub block_time_ns: u64,
    /// The registry version pinned by the summary block: it decides membership, keys and
    /// the replica version for the interval that starts here.
    pub registry_version: RegistryVersion,
    /// The replica version that produced the summary block.
    pub replica_version: ReplicaVersion,
    pub random_beacon: RandomBeacon,
    /// The hash of the replicated state after executing the block at `height`.
    pub state_hash: CryptoHash,
    /// The oldest registry version the subnet may still need (for node removal).
    pub oldest_registry_version_in_use: RegistryVersion,
    /// Fields written by a newer release that this release does not know, by tag; kept so
    /// that re-encoding yields the signed bytes.
    pub extensions: BTreeMap<u16, Vec<u8>>,
}

impl CupContent {
    /// The canonical encoding (the bytes that are signed).
    pub fn encode(&self) -> Vec<u8> {
        use types::codec::encode as e;
        let mut fields: BTreeMap<u16, Vec<u8>> = self.extensions.clone();
        // Known fields win over an extension with the same tag (decode never makes one).
        fields.insert(tag::SUBNET_ID, e(&self.subnet_id));
        fields.insert(tag::HEIGHT, e(&self.height));
        fields.insert(tag::BLOCK_HASH, e(&self.block_hash));
        fields.insert(tag::BLOCK_TIME_NS, e(&self.block_time_ns));
        fields.insert(tag::REGISTRY_VERSION, e(&self.registry_version));
        fields.insert(tag::REPLICA_VERSION, e(&self.replica_version));
        fields.insert(tag::RANDOM_BEACON, e(&self.random_beacon));
        fields.insert(tag::STATE_HASH, e(&self.state_hash));
        fields.insert(tag::OLDEST_REGISTRY_VERSION_IN_USE, e(&self.oldest_registry_version_in_use));
        let record = fields.iter().fold(FieldsWriter::new(), |w, (t, b)| w.raw(*t, b)).finish();
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
            .ok_or(CupError::Malformed("content does not start with \"CUPC\"".into()))?;
        let (&format, body) =
            body.split_first().ok_or(CupError::Malformed("content has no format byte".into()))?;
        if format != CONTENT_FORMAT {
            return Err(CupError::UnsupportedFormat { what: "content", found: format });
        }
        let f = Fields::parse(body, crate::MAX_CUP_BYTES)?;
        let random_beacon: RandomBeacon = f.required(tag::RANDOM_BEACON, "random_beacon")?;
        if random_beacon.0.len() > RandomBeacon::MAX_BYTES {
            return Err(CupError::Malformed(format!(
                "random beacon of {} bytes (at most {})",
                random_beacon.0.len(),
                RandomBeacon::MAX_BYTES
            )));
        }
        let extensions = f
            .unknown_tags(tag::KNOWN)
            .into_iter()
            .filter_map(|t| f.raw(t).map(|b| (t, b.to_vec())))
            .collect();
        Ok(Self {
            subnet_id: f.required(tag::SUBNET_ID, "subnet_id")?,
            height: f.required(tag::HEIGHT, "height")?,
            block_hash: f.required(tag::BLOCK_HASH, "block_hash")?,
            block_time_ns: f.required(tag::BLOCK_TIME_NS, "block_time_ns")?,
            registry_version: f.required(tag::REGISTRY_VERSION, "registry_version")?,
            replica_version: f.required(tag::REPLICA_VERSION, "replica_version")?,
            random_beacon,
            state_hash: f.required(tag::STATE_HASH, "state_hash")?,
            oldest_registry_version_in_use: f
                .required(tag::OLDEST_REGISTRY_VERSION_IN_USE, "oldest_registry_version_in_use")?,
            extensions,
        })
    }

    pub fn param(&self) -> crate::CupParam {
        crate::CupParam { height: self.height, registry_version: self.registry_version }
    }
}
