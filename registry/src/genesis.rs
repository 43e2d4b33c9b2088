//! The genesis file that `registry init` reads, and a generator of whole networks
//! (keys, threshold dealing, genesis) for `testnet prep` and tests.

use crate::{
    records::{
        CupContentsKind, CupContentsRecord, NeuronRecord, NodeRecord, RegistryRecord,
        ReplicaVersionRecord, SubnetKind, SubnetListRecord, SubnetRecord, keys,
    },
    store::Mutation,
};
use crypto::{
    bls::{BlsPublicKey, BlsSecretKey, ProofOfPossession},
    ed25519::{Ed25519KeyPair, Ed25519PublicKey},
    reshare::{EncryptionPublicKey, EncryptionSecretKey},
    threshold::{SecretShare, ThresholdPublicKey, deal, high_threshold, low_threshold},
};
use serde::{Deserialize, Serialize};
use types::{CryptoHash, Height, NodeId, ReplicaVersion, SubnetId};

/// The largest genesis file read (a network of thousands of nodes is a few MiB).
pub const MAX_GENESIS_BYTES: u64 = 16 * 1024 * 1024;

fn default_voting_period_seconds() -> u64 {
    crate::governance::DEFAULT_VOTING_PERIOD_NS / 1_000_000_000
}

/// The initial registry contents (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    #[serde(default = "default_voting_period_seconds")]
    pub voting_period_seconds: u64,
    pub neurons: Vec<GenesisNeuron>,
    pub versions: Vec<GenesisVersion>,
    pub nodes: Vec<GenesisNode>,
    pub subnets: Vec<GenesisSubnet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisNeuron {
    pub id: u64,
    pub controller: Ed25519PublicKey,
    pub voting_power: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisVersion {
    pub version: ReplicaVersion,
    pub sha256: String,
    pub urls: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisNode {
    pub node_id: NodeId,
    pub ed25519_public_key: Ed25519PublicKey,
    pub bls_public_key: BlsPublicKey,
    pub bls_proof_of_possession: ProofOfPossession,
    pub consensus_address: String,
    pub http_address: String,
    pub cup_address: String,
    /// X25519 (hex): what the subnet's threshold keys are reshared to this node under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dealing_encryption_key: Option<EncryptionPublicKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisSubnet {
    pub subnet_id: SubnetId,
    pub members: Vec<NodeId>,
    pub replica_version: ReplicaVersion,
    pub dkg_interval_length: u64,
    pub unit_delay_ms: u64,
    pub initial_notary_delay_ms: u64,
    pub low_threshold_key: ThresholdPublicKey,
    pub high_threshold_key: ThresholdPublicKey,
    pub genesis_time_ns: u64,
    pub genesis_state_hash: CryptoHash,
    /// Absent: an application subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SubnetKind>,
}

impl Genesis {
    /// Parses a genesis file, naming the field that is wrong.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads and parses a genesis file of at most [`MAX_GENESIS_BYTES`].
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        use std::io::Read;
        let shown = path.display();
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_GENESIS_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| format!("{shown}: {e}"))?;
        if text.len() as u64 > MAX_GENESIS_BYTES {
            return Err(format!("{shown}: larger than {MAX_GENESIS_BYTES} bytes"));
        }
        Self::from_json(&text).map_err(|e| format!("{shown}: {e}"))
    }

    /// The batch that writes these contents into an empty registry.
    pub fn mutations(&self) -> Vec<Mutation> {
        let mut out = Vec::new();
        let mut insert = |key: String, value: Vec<u8>| out.push(Mutation::Insert { key, value });
        for n in &self.neurons {
            let r = NeuronRecord {
                id: n.id,
                controller: n.controller,
                voting_power: n.voting_power,
                extensions: Default::default(),
            };
            insert(keys::neuron(n.id), r.encode_value());
        }
        for v in &self.versions {
            let r = ReplicaVersionRecord {
                version: v.version.clone(),
                release_package_sha256_hex: v.sha256.clone(),
                release_package_urls: v.urls.clone(),
                recalled: false,
                extensions: Default::default(),
            };
            insert(keys::replica_version(&v.version), r.encode_value());
        }
        for n in &self.nodes {
            let r = NodeRecord {
                node_id: n.node_id,
                ed25519_public_key: n.ed25519_public_key,
                bls_public_key: n.bls_public_key,
                bls_proof_of_possession: n.bls_proof_of_possession,
                consensus_address: n.consensus_address.clone(),
                http_address: n.http_address.clone(),
                cup_address: n.cup_address.clone(),
                dealing_encryption_key: n.dealing_encryption_key,
                extensions: Default::default(),
            };
            insert(keys::node_record(&n.node_id), r.encode_value());
        }
        for s in &self.subnets {
            let r = SubnetRecord {
                subnet_id: s.subnet_id,
                members: s.members.clone(),
                replica_version: s.replica_version.clone(),
                dkg_interval_length: s.dkg_interval_length,
                unit_delay_ms: s.unit_delay_ms,
                initial_notary_delay_ms: s.initial_notary_delay_ms,
                low_threshold_key: s.low_threshold_key.clone(),
                high_threshold_key: s.high_threshold_key.clone(),
                halt_at_cup_height: false,
                is_halted: false,
                key_holders: None,
                kind: s.kind,
                extensions: Default::default(),
            };
            insert(keys::subnet_record(&s.subnet_id), r.encode_value());
            let cup = CupContentsRecord {
                kind: CupContentsKind::Genesis,
                height: Height::ZERO,
                time_ns: s.genesis_time_ns,
                state_hash: s.genesis_state_hash,
                extensions: Default::default(),
            };
            insert(keys::cup_contents(&s.subnet_id), cup.encode_value());
        }
        let list = SubnetListRecord {
            subnets: self.subnets.iter().map(|s| s.subnet_id).collect(),
            extensions: Default::default(),
        };
        insert(keys::SUBNET_LIST.to_string(), list.encode_value());
        out
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct NetworkParams {
    pub nodes: usize,
    pub neurons: usize,
    pub dkg_interval_length: u64,
    pub unit_delay_ms: u64,
    pub initial_notary_delay_ms: u64,
    /// Node `i` listens on `base_port + 3i` (consensus), `+ 1` (HTTP), `+ 2` (CUPs).
    pub base_port: u16,
    pub replica_version: ReplicaVersion,
    pub package_sha256: String,
    pub package_urls: Vec<String>,
    pub genesis_time_ns: u64,
}

/// One generated node: its secrets and its public record.
#[derive(Debug)]
pub struct GeneratedNode {
    pub ed25519: Ed25519KeyPair,
    pub bls: BlsSecretKey,
    pub encryption: EncryptionSecretKey,
    pub low_share: SecretShare,
    pub high_share: SecretShare,
    pub record: GenesisNode,
}

/// A node registered at genesis in no subnet: no threshold shares (it gets them when a
/// subnet it is added to reshares its key).
#[derive(Debug)]
pub struct SpareNode {
    pub ed25519: Ed25519KeyPair,
    pub bls: BlsSecretKey,
    pub encryption: EncryptionSecretKey,
    pub record: GenesisNode,
}

/// A whole network: the genesis and every secret that goes with it.
#[derive(Debug)]
pub struct GeneratedNetwork {
    pub genesis: Genesis,
    pub nodes: Vec<GeneratedNode>,
    /// After the subnet's nodes (`nodes/node-<n + j>`), in the genesis's node list.
    pub spares: Vec<SpareNode>,
    /// After the spares: the NNS subnet's nodes, if the network has one
    /// ([`GeneratedNetwork::add_nns_subnet`]).
    pub nns: Vec<GeneratedNode>,
    pub neuron_keys: Vec<Ed25519KeyPair>,
}

/// A node's three key pairs and the record that registers them (addresses on
/// `127.0.0.1`, `base_port + 3i` and up; callers that place nodes elsewhere rewrite them).
fn node_keys<R: rand::RngCore + rand::CryptoRng>(
    i: usize,
    base_port: u16,
    rng: &mut R,
) -> (
    Ed25519KeyPair,
    BlsSecretKey,
    EncryptionSecretKey,
    GenesisNode,
) {
    let ed25519 = Ed25519KeyPair::generate(rng);
    let bls = BlsSecretKey::generate(rng);
    let encryption = EncryptionSecretKey::generate(rng);
    let port = |k: usize| format!("127.0.0.1:{}", base_port as usize + 3 * i + k);
    let record = GenesisNode {
        node_id: ed25519.node_id(),
        ed25519_public_key: ed25519.public_key(),
        bls_public_key: bls.public_key(),
        bls_proof_of_possession: bls.prove_possession(),
        consensus_address: port(0),
        http_address: port(1),
        cup_address: port(2),
        dealing_encryption_key: Some(encryption.public_key()),
    };
    (ed25519, bls, encryption, record)
}

/// Generates keys for every node and neuron, deals the subnet's threshold keys, and
/// writes a genesis with one subnet holding every node. Neurons get equal voting power.
pub fn generate_network<R: rand::RngCore + rand::CryptoRng>(
    params: &NetworkParams,
    rng: &mut R,
) -> Result<GeneratedNetwork, crypto::CryptoError> {
    let (nodes, subnet) = subnet_of(params, params.nodes, 0, params.base_port, None, rng)?;
    let neuron_keys: Vec<Ed25519KeyPair> = (0..params.neurons)
        .map(|_| Ed25519KeyPair::generate(rng))
        .collect();
    let genesis = Genesis {
        voting_period_seconds: default_voting_period_seconds(),
        neurons: neuron_keys
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisNeuron {
                id: i as u64,
                controller: k.public_key(),
                voting_power: 100,
            })
            .collect(),
        versions: vec![GenesisVersion {
            version: params.replica_version.clone(),
            sha256: params.package_sha256.clone(),
            urls: params.package_urls.clone(),
        }],
        nodes: nodes.iter().map(|n| n.record.clone()).collect(),
        subnets: vec![subnet],
    };
    Ok(GeneratedNetwork {
        genesis,
        nodes,
        spares: Vec::new(),
        nns: Vec::new(),
        neuron_keys,
    })
}

/// `n` nodes (numbered from `first`) with the shares of one fresh dealing of a subnet's
/// two threshold keys, and the subnet made of them.
fn subnet_of<R: rand::RngCore + rand::CryptoRng>(
    params: &NetworkParams,
    n: usize,
    first: usize,
    base_port: u16,
    kind: Option<SubnetKind>,
    rng: &mut R,
) -> Result<(Vec<GeneratedNode>, GenesisSubnet), crypto::CryptoError> {
    let low = deal(n, low_threshold(n), rng)?;
    let high = deal(n, high_threshold(n), rng)?;
    let mut nodes = Vec::with_capacity(n);
    for (i, (low_share, high_share)) in low.shares.into_iter().zip(high.shares).enumerate() {
        let (ed25519, bls, encryption, record) = node_keys(first + i, base_port, rng);
        nodes.push(GeneratedNode {
            ed25519,
            bls,
            encryption,
            low_share,
            high_share,
            record,
        });
    }
    let subnet = GenesisSubnet {
        subnet_id: SubnetId::from_threshold_public_key(&high.public.group_key.to_bytes()),
        members: nodes.iter().map(|n| n.record.node_id).collect(),
        replica_version: params.replica_version.clone(),
        dkg_interval_length: params.dkg_interval_length,
        unit_delay_ms: params.unit_delay_ms,
        initial_notary_delay_ms: params.initial_notary_delay_ms,
        low_threshold_key: low.public,
        high_threshold_key: high.public,
        genesis_time_ns: params.genesis_time_ns,
        genesis_state_hash: types::empty_state_hash(),
        kind,
    };
    Ok((nodes, subnet))
}

impl GeneratedNetwork {
    /// Adds an NNS subnet of `count` new nodes (after the nodes and spares, ports
    /// following theirs), with its own threshold keys, whose state is the registry and
    /// governance with this genesis's voting period. It is the genesis's second subnet.
    pub fn add_nns_subnet<R: rand::RngCore + rand::CryptoRng>(
        &mut self,
        params: &NetworkParams,
        count: usize,
        rng: &mut R,
    ) -> Result<(), crypto::CryptoError> {
        let first = self.nodes.len() + self.spares.len() + self.nns.len();
        let kind = SubnetKind::Nns {
            voting_period_seconds: self.genesis.voting_period_seconds,
        };
        let (nodes, subnet) = subnet_of(params, count, first, params.base_port, Some(kind), rng)?;
        self.genesis
            .nodes
            .extend(nodes.iter().map(|n| n.record.clone()));
        self.genesis.subnets.push(subnet);
        self.nns.extend(nodes);
        Ok(())
    }

    /// Registers `count` more nodes in no subnet (their ports follow the subnet's).
    pub fn add_spares<R: rand::RngCore + rand::CryptoRng>(
        &mut self,
        count: usize,
        base_port: u16,
        rng: &mut R,
    ) {
        for _ in 0..count {
            let i = self.nodes.len() + self.spares.len();
            let (ed25519, bls, encryption, record) = node_keys(i, base_port, rng);
            self.genesis.nodes.push(record.clone());
            self.spares.push(SpareNode {
                ed25519,
                bls,
                encryption,
                record,
            });
        }
    }

    /// Writes `genesis.json`, `neurons/neuron-<i>.key` and, per node (the subnet's, the
    /// spares, the NNS subnet's),
    /// `nodes/node-<i>/{node.key, bls.key, encryption.key, low_share.key,
    /// high_share.key}` (every secret with mode 0600; a spare node has no shares). A
    /// node's share index is its position in its subnet.
    pub fn write(&self, dir: &std::path::Path) -> Result<(), String> {
        let io = |p: &std::path::Path, e: std::io::Error| format!("{}: {e}", p.display());
        let neurons = dir.join("neurons");
        std::fs::create_dir_all(&neurons).map_err(|e| io(&neurons, e))?;
        let genesis = dir.join("genesis.json");
        let text = serde_json::to_string_pretty(&self.genesis).map_err(|e| e.to_string())?;
        std::fs::write(&genesis, text + "\n").map_err(|e| io(&genesis, e))?;
        for (i, k) in self.neuron_keys.iter().enumerate() {
            k.write_to_file(&neurons.join(format!("neuron-{i}.key")))
                .map_err(|e| e.to_string())?;
        }
        let keys = self
            .nodes
            .iter()
            .map(|n| (&n.ed25519, &n.bls, &n.encryption, Some(n)))
            .chain(
                self.spares
                    .iter()
                    .map(|n| (&n.ed25519, &n.bls, &n.encryption, None)),
            )
            .chain(
                self.nns
                    .iter()
                    .map(|n| (&n.ed25519, &n.bls, &n.encryption, Some(n))),
            );
        for (i, (ed25519, bls, encryption, member)) in keys.enumerate() {
            let d = dir.join("nodes").join(format!("node-{i}"));
            std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
            let secret = |name: &str, bytes: &[u8]| {
                crypto::key_file::write(&d.join(name), bytes).map_err(|e| e.to_string())
            };
            secret("node.key", &ed25519.seed())?;
            secret("bls.key", &bls.to_bytes())?;
            secret("encryption.key", &encryption.to_bytes())?;
            if let Some(n) = member {
                secret("low_share.key", &n.low_share.key.to_bytes())?;
                secret("high_share.key", &n.high_share.key.to_bytes())?;
            }
        }
        Ok(())
    }
}
