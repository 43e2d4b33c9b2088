//! Invariants of the whole registry, checked on the state after every batch; a batch that
//! would break one is refused and creates no version.
//!
//! 1. Every record under a known prefix decodes, and its id matches its key.
//! 2. The subnet list and the subnet records name the same subnets.
//! 3. Every version in use by a subnet is elected (has a `replica_version_` record).
//! 4. An elected version has a SHA-256 of 64 lowercase hex characters and at least one URL,
//!    each parsing as an absolute `http` or `https` URL.
//! 5. A subnet has members, no member twice, every member has a node record, and no node
//!    belongs to two subnets.
//! 6. A subnet's threshold keys match the committee they were dealt to (`key_holders`,
//!    else the members): one share key per holder, low threshold `f + 1`, high threshold
//!    `n - f`; the holders are distinct registered nodes.
//! 7. A node's id is derived from its ed25519 key, its BLS key's proof of possession
//!    verifies (rogue-key safety), its dealing encryption key (if any) is not a
//!    low-order point, and its addresses parse as `ip:port`.
//! 8. Subnet parameters are sane (`dkg_interval_length` in 1..=10000) and neurons have
//!    voting power.

use crate::records::{
    CupContentsRecord, NeuronRecord, NodeRecord, RegistryRecord, ReplicaVersionRecord,
    SubnetListRecord, SubnetRecord, keys,
};
use crypto::threshold::{high_threshold, low_threshold};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};
use types::{NodeId, ReplicaVersion, SubnetId};

/// A broken invariant, in words a governance participant can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("record {key} is malformed: {reason}")]
    MalformedRecord { key: String, reason: String },
    #[error("record {key} holds the record of {found}")]
    KeyMismatch { key: String, found: String },
    #[error("subnet {subnet} is in the subnet list but has no record")]
    ListedSubnetWithoutRecord { subnet: SubnetId },
    #[error("subnet {subnet} has a record but is not in the subnet list")]
    UnlistedSubnet { subnet: SubnetId },
    #[error("subnet {subnet} runs version {version}, which is not elected")]
    VersionNotElected {
        subnet: SubnetId,
        version: ReplicaVersion,
    },
    #[error(
        "version {version}: the package SHA-256 must be 64 lowercase hex characters, got {sha256:?}"
    )]
    BadSha256 {
        version: ReplicaVersion,
        sha256: String,
    },
    #[error("version {version} has no download URL")]
    NoUrls { version: ReplicaVersion },
    #[error("version {version}: URL {url:?} is not usable: {reason}")]
    BadUrl {
        version: ReplicaVersion,
        url: String,
        reason: String,
    },
    #[error("subnet {subnet} has no members")]
    EmptySubnet { subnet: SubnetId },
    #[error("subnet {subnet} lists node {node} twice")]
    DuplicateMember { subnet: SubnetId, node: NodeId },
    #[error("subnet {subnet} has member {node}, which has no node record")]
    MissingMember { subnet: SubnetId, node: NodeId },
    #[error("node {node} belongs to two subnets, {first} and {second}")]
    NodeInTwoSubnets {
        node: NodeId,
        first: SubnetId,
        second: SubnetId,
    },
    #[error("subnet {subnet}: the {which} threshold key {problem}")]
    ThresholdMismatch {
        subnet: SubnetId,
        which: &'static str,
        problem: String,
    },
    #[error("node {node}: {problem}")]
    BadNode { node: NodeId, problem: String },
    #[error("subnet {subnet}: {problem}")]
    BadSubnetParameter { subnet: SubnetId, problem: String },
    #[error("neuron {id} has no voting power")]
    NeuronWithoutVotingPower { id: u64 },
}

/// The registry's latest state, decoded.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub subnet_list: Option<SubnetListRecord>,
    pub subnets: BTreeMap<SubnetId, SubnetRecord>,
    pub versions: BTreeMap<ReplicaVersion, ReplicaVersionRecord>,
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub cup_contents: BTreeMap<SubnetId, CupContentsRecord>,
    pub neurons: BTreeMap<u64, NeuronRecord>,
}

fn decode<R: RegistryRecord>(key: &str, bytes: &[u8]) -> Result<R, InvariantViolation> {
    R::decode_value(bytes).map_err(|e| InvariantViolation::MalformedRecord {
        key: key.into(),
        reason: e.to_string(),
    })
}

fn check_key(key: &str, expected: String, found: impl ToString) -> Result<(), InvariantViolation> {
    if key == expected {
        Ok(())
    } else {
        Err(InvariantViolation::KeyMismatch {
            key: key.into(),
            found: found.to_string(),
        })
    }
}

impl Snapshot {
    /// Decodes every record of a known family (invariant 1). Keys of unknown families
    /// are ignored: a newer release may add families.
    pub fn decode(map: &BTreeMap<String, Vec<u8>>) -> Result<Self, InvariantViolation> {
        let mut s = Self::default();
        for (key, bytes) in map {
            if key == keys::SUBNET_LIST {
                s.subnet_list = Some(decode(key, bytes)?);
            } else if key.starts_with(keys::SUBNET_RECORD_PREFIX) {
                let r: SubnetRecord = decode(key, bytes)?;
                check_key(key, keys::subnet_record(&r.subnet_id), r.subnet_id)?;
                s.subnets.insert(r.subnet_id, r);
            } else if key.starts_with(keys::REPLICA_VERSION_PREFIX) {
                let r: ReplicaVersionRecord = decode(key, bytes)?;
                check_key(key, keys::replica_version(&r.version), &r.version)?;
                s.versions.insert(r.version.clone(), r);
            } else if key.starts_with(keys::NODE_RECORD_PREFIX) {
                let r: NodeRecord = decode(key, bytes)?;
                check_key(key, keys::node_record(&r.node_id), r.node_id)?;
                s.nodes.insert(r.node_id, r);
            } else if let Some(rest) = key.strip_prefix(keys::CUP_CONTENTS_PREFIX) {
                let subnet: SubnetId =
                    rest.parse()
                        .map_err(|e| InvariantViolation::MalformedRecord {
                            key: key.clone(),
                            reason: format!("bad subnet id in key: {e}"),
                        })?;
                s.cup_contents.insert(subnet, decode(key, bytes)?);
            } else if key.starts_with(keys::NEURON_PREFIX) {
                let r: NeuronRecord = decode(key, bytes)?;
                check_key(key, keys::neuron(r.id), r.id)?;
                s.neurons.insert(r.id, r);
            }
        }
        Ok(s)
    }

    /// Checks invariants 2 to 8.
    pub fn check(&self) -> Result<(), InvariantViolation> {
        let listed: BTreeSet<SubnetId> = self
            .subnet_list
            .iter()
            .flat_map(|l| l.subnets.iter().copied())
            .collect();
        for subnet in &listed {
            if !self.subnets.contains_key(subnet) {
                return Err(InvariantViolation::ListedSubnetWithoutRecord { subnet: *subnet });
            }
        }
        let mut owner: BTreeMap<NodeId, SubnetId> = BTreeMap::new();
        for (id, s) in &self.subnets {
            if !listed.contains(id) {
                return Err(InvariantViolation::UnlistedSubnet { subnet: *id });
            }
            if !self.versions.contains_key(&s.replica_version) {
                return Err(InvariantViolation::VersionNotElected {
                    subnet: *id,
                    version: s.replica_version.clone(),
                });
            }
            check_subnet(s, &self.nodes, &mut owner)?;
        }
        for v in self.versions.values() {
            check_version(v)?;
        }
        for n in self.nodes.values() {
            check_node(n)?;
        }
        for n in self.neurons.values() {
            if n.voting_power == 0 {
                return Err(InvariantViolation::NeuronWithoutVotingPower { id: n.id });
            }
        }
        Ok(())
    }
}

fn check_subnet(
    s: &SubnetRecord,
    nodes: &BTreeMap<NodeId, NodeRecord>,
    owner: &mut BTreeMap<NodeId, SubnetId>,
) -> Result<(), InvariantViolation> {
    let subnet = s.subnet_id;
    if s.members.is_empty() {
        return Err(InvariantViolation::EmptySubnet { subnet });
    }
    let mut seen = BTreeSet::new();
    for node in &s.members {
        if !seen.insert(*node) {
            return Err(InvariantViolation::DuplicateMember {
                subnet,
                node: *node,
            });
        }
        if !nodes.contains_key(node) {
            return Err(InvariantViolation::MissingMember {
                subnet,
                node: *node,
            });
        }
        if let Some(first) = owner.insert(*node, subnet) {
            return Err(InvariantViolation::NodeInTwoSubnets {
                node: *node,
                first,
                second: subnet,
            });
        }
    }
    let holders = s.key_holders.as_ref().unwrap_or(&s.members);
    let mut seen = BTreeSet::new();
    for node in holders {
        if !seen.insert(*node) || !nodes.contains_key(node) {
            return Err(InvariantViolation::ThresholdMismatch {
                subnet,
                which: "dealt",
                problem: format!("names holder {node} twice or without a node record"),
            });
        }
    }
    let n = holders.len();
    for (which, key, expected) in [
        ("low", &s.low_threshold_key, low_threshold(n)),
        ("high", &s.high_threshold_key, high_threshold(n)),
    ] {
        let problem = if key.share_keys.len() != n {
            Some(format!(
                "has {} share keys for {n} holders",
                key.share_keys.len()
            ))
        } else if key.threshold as usize != expected {
            Some(format!(
                "has threshold {}, but {n} holders need {expected}",
                key.threshold
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(InvariantViolation::ThresholdMismatch {
                subnet,
                which,
                problem,
            });
        }
    }
    if !(1..=10_000).contains(&s.dkg_interval_length) {
        return Err(InvariantViolation::BadSubnetParameter {
            subnet,
            problem: format!(
                "dkg_interval_length {} is outside 1..=10000",
                s.dkg_interval_length
            ),
        });
    }
    Ok(())
}

/// Invariant 4, also used to validate proposals before they are voted on.
pub fn check_version(v: &ReplicaVersionRecord) -> Result<(), InvariantViolation> {
    let sha = &v.release_package_sha256_hex;
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(InvariantViolation::BadSha256 {
            version: v.version.clone(),
            sha256: sha.clone(),
        });
    }
    if v.release_package_urls.is_empty() {
        return Err(InvariantViolation::NoUrls {
            version: v.version.clone(),
        });
    }
    for url in &v.release_package_urls {
        let bad = |reason: String| InvariantViolation::BadUrl {
            version: v.version.clone(),
            url: url.clone(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme {:?} is not allowed (only http and https)",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host".into()));
        }
    }
    Ok(())
}

fn check_node(n: &NodeRecord) -> Result<(), InvariantViolation> {
    let bad = |problem: String| InvariantViolation::BadNode {
        node: n.node_id,
        problem,
    };
    if n.ed25519_public_key.node_id() != n.node_id {
        return Err(bad(
            "its id is not derived from its ed25519 public key".into()
        ));
    }
    n.bls_public_key
        .verify_possession(&n.bls_proof_of_possession)
        .map_err(|_| bad("the proof of possession of its BLS key does not verify".into()))?;
    if let Some(k) = &n.dealing_encryption_key {
        k.check()
            .map_err(|e| bad(format!("its dealing encryption key: {e}")))?;
    }
    for (field, addr) in [
        ("consensus_address", &n.consensus_address),
        ("http_address", &n.http_address),
        ("cup_address", &n.cup_address),
    ] {
        addr.parse::<SocketAddr>()
            .map_err(|_| bad(format!("{field} {addr:?} is not an ip:port address")))?;
    }
    Ok(())
}
