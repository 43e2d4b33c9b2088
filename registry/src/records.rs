//! Typed registry records and their keys, all in this one module.
//!
//! Every record is an extensible record ([`types::extensible_record!`]): a later release
//! may add fields (as `defaulted` ones) and both releases read each other's records.

use crypto::{
    bls::{BlsPublicKey, ProofOfPossession},
    ed25519::Ed25519PublicKey,
    reshare::EncryptionPublicKey,
    threshold::ThresholdPublicKey,
};
use serde::{Deserialize, Serialize};
use types::{CryptoHash, Height, NodeId, ReplicaVersion, SubnetId, codec::CodecError};

/// Registry keys. The `*_PREFIX` constants identify record families.
pub mod keys {
    use types::{NodeId, ReplicaVersion, SubnetId};

    pub const SUBNET_LIST: &str = "subnet_list";
    pub const SUBNET_RECORD_PREFIX: &str = "subnet_record_";
    pub const REPLICA_VERSION_PREFIX: &str = "replica_version_";
    pub const NODE_RECORD_PREFIX: &str = "node_record_";
    pub const CUP_CONTENTS_PREFIX: &str = "catch_up_package_contents_";
    pub const NEURON_PREFIX: &str = "neuron_";

    pub fn subnet_record(id: &SubnetId) -> String {
        format!("{SUBNET_RECORD_PREFIX}{id}")
    }
    pub fn replica_version(v: &ReplicaVersion) -> String {
        format!("{REPLICA_VERSION_PREFIX}{v}")
    }
    pub fn node_record(id: &NodeId) -> String {
        format!("{NODE_RECORD_PREFIX}{id}")
    }
    pub fn cup_contents(id: &SubnetId) -> String {
        format!("{CUP_CONTENTS_PREFIX}{id}")
    }
    pub fn neuron(id: u64) -> String {
        format!("{NEURON_PREFIX}{id}")
    }
}

/// A record stored under a registry key.
pub trait RegistryRecord: Sized {
    fn encode_value(&self) -> Vec<u8>;
    fn decode_value(bytes: &[u8]) -> Result<Self, CodecError>;
}

macro_rules! registry_records {
    ($($name:ident),*) => {
        $(impl RegistryRecord for $name {
            fn encode_value(&self) -> Vec<u8> {
                self.encode_record()
            }
            fn decode_value(bytes: &[u8]) -> Result<Self, CodecError> {
                Self::decode_record(bytes)
            }
        })*
    };
}

types::extensible_record! {
    /// `subnet_list`: every subnet.
    pub struct SubnetListRecord {
        1 required subnets: Vec<SubnetId>,
    }
}

types::extensible_record! {
    /// `subnet_record_<subnet id>`.
    pub struct SubnetRecord {
        1 required subnet_id: SubnetId,
        /// The membership governance decided. Until the first membership change,
        /// member `i` holds threshold share `i` (see `key_holders`).
        2 required members: Vec<NodeId>,
        /// The version the subnet must run.
        3 required replica_version: ReplicaVersion,
        /// A summary block every `dkg_interval_length + 1` heights.
        4 required dkg_interval_length: u64,
        /// The block-maker delay per rank.
        5 required unit_delay_ms: u64,
        /// The minimum time between a block and its child.
        6 required initial_notary_delay_ms: u64,
        /// Threshold `f + 1`: the random beacon.
        7 required low_threshold_key: ThresholdPublicKey,
        /// Threshold `n - f`: CUPs and state certification.
        8 required high_threshold_key: ThresholdPublicKey,
        /// Halt at the next CUP height (then `is_halted`).
        9 defaulted halt_at_cup_height: bool,
        /// Produce no blocks at all.
        10 defaulted is_halted: bool,
        /// The nodes the threshold keys' shares were dealt to (at genesis or a
        /// recovery), in share-index order. Absent: `members`. A membership change keeps
        /// them: from then on the subnet's own CUPs name the committee holding the
        /// (reshared) key, whose group keys never change.
        11 optional key_holders: Option<Vec<NodeId>>,
        /// What the subnet's replicas execute. Absent: an application subnet (records
        /// written before subnets had kinds encode as they did).
        12 optional kind: Option<SubnetKind>,
    }
}

/// What a subnet's replicated state machine is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubnetKind {
    /// The key/value application users update and query.
    #[default]
    Application,
    /// The Network Nervous System: its state is the registry and governance (issue 19),
    /// installed from the genesis registry by its first block, with governance's voting
    /// period.
    Nns { voting_period_seconds: u64 },
}

impl SubnetRecord {
    pub fn subnet_kind(&self) -> SubnetKind {
        self.kind.unwrap_or_default()
    }

    /// The nodes that hold the threshold keys' shares, in share-index order: the ones
    /// that run consensus. Equal to `members` until governance changes the membership;
    /// from then on the dealt committee until the subnet reshares its key to the new one.
    pub fn committee(&self) -> &[NodeId] {
        self.key_holders.as_deref().unwrap_or(&self.members)
    }
}

types::extensible_record! {
    /// `replica_version_<version>`: an elected release.
    pub struct ReplicaVersionRecord {
        1 required version: ReplicaVersion,
        /// SHA-256 of the release package, 64 lowercase hex characters.
        2 required release_package_sha256_hex: String,
        /// Where to download the package (http or https), tried in turn.
        3 required release_package_urls: Vec<String>,
        /// Recalled by governance: no orchestrator downloads, rehearses or starts it
        /// again, and no subnet can be deployed to or recovered onto it.
        4 defaulted recalled: bool,
    }
}

types::extensible_record! {
    /// `node_record_<node id>`.
    pub struct NodeRecord {
        1 required node_id: NodeId,
        2 required ed25519_public_key: Ed25519PublicKey,
        3 required bls_public_key: BlsPublicKey,
        4 required bls_proof_of_possession: ProofOfPossession,
        /// QUIC, `ip:port`.
        5 required consensus_address: String,
        /// The replica's public HTTP API, `ip:port`.
        6 required http_address: String,
        /// The orchestrator's CUP endpoint, `ip:port`.
        7 required cup_address: String,
        /// X25519: the subnet's threshold keys are reshared to this node encrypted to it.
        /// A node without one cannot be added to a subnet.
        8 optional dealing_encryption_key: Option<EncryptionPublicKey>,
    }
}

/// Why a registry CUP exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CupContentsKind {
    Genesis,
    Recovery,
}

types::extensible_record! {
    /// `catch_up_package_contents_<subnet id>`: what a genesis or recovery CUP is built from.
    pub struct CupContentsRecord {
        1 required kind: CupContentsKind,
        2 required height: Height,
        3 required time_ns: u64,
        4 required state_hash: CryptoHash,
    }
}

types::extensible_record! {
    /// `neuron_<id>`: a governance participant.
    pub struct NeuronRecord {
        1 required id: u64,
        /// Signs the neuron's proposals and votes.
        2 required controller: Ed25519PublicKey,
        3 required voting_power: u64,
    }
}

registry_records!(
    SubnetListRecord,
    SubnetRecord,
    ReplicaVersionRecord,
    NodeRecord,
    CupContentsRecord,
    NeuronRecord
);
