//! The node side's reads of a registry copy: a subnet as of a version (its record and its
//! members' node records, in share-index order), which subnet a node belongs to, and the
//! registry CUP (genesis or recovery) built from the registry's own contents.
//!
//! Pure reads over any [`RegistryStore`]: the replica reads the node-local copy the
//! orchestrator keeps (a RocksDB secondary, [`crate::store::RocksStore::open_secondary`]).

use crate::records::{
    CupContentsKind, CupContentsRecord, NodeRecord, RegistryRecord, SubnetListRecord, SubnetRecord,
    keys,
};
use crate::store::{RegistryStore, StoreError};
use cup::{CupCommittee, CupContent, RandomBeacon, RegistryCup, RegistryCupKind};
use types::{CryptoHash, NodeId, RegistryVersion, SubnetId, codec, domain};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("registry version {version}: {what} is missing")]
    Missing {
        version: RegistryVersion,
        what: String,
    },
    #[error("registry version {version}: record {key} does not decode: {reason}")]
    Malformed {
        version: RegistryVersion,
        key: String,
        reason: String,
    },
}

/// A subnet as the registry describes it at one version.
#[derive(Clone, Debug)]
pub struct SubnetAt {
    pub version: RegistryVersion,
    pub record: SubnetRecord,
    /// The committee's node records ([`SubnetRecord::committee`]), in share-index order
    /// (member `i` holds share `i`): the nodes that run the subnet's consensus.
    pub members: Vec<NodeRecord>,
}

impl SubnetAt {
    /// The share index of `node`, if it is in the committee.
    pub fn index_of(&self, node: &NodeId) -> Option<usize> {
        self.record.committee().iter().position(|m| m == node)
    }

    /// Whether governance made `node` a member (it may not be in the committee yet, or
    /// may still be in it after its removal).
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.record.members.contains(node)
    }

    /// The subnet as a CUP that names a reshared committee says it is: that committee
    /// holds the keys (the registry's key holders and share keys are genesis's, the CUP
    /// is the authority after a resharing), with its node records at this version.
    pub fn with_cup_committee<S: RegistryStore>(
        mut self,
        store: &S,
        committee: Option<&CupCommittee>,
    ) -> Result<Self, LocalError> {
        let Some(c) = committee else {
            return Ok(self);
        };
        self.members = c
            .nodes
            .iter()
            .map(|m| need(store, &keys::node_record(m), self.version).map(|(_, r)| r))
            .collect::<Result<Vec<NodeRecord>, _>>()?;
        self.record.key_holders = Some(c.nodes.clone());
        self.record.low_threshold_key = c.low.clone();
        self.record.high_threshold_key = c.high.clone();
        Ok(self)
    }
}

/// The node records of the subnet's members (as governance assigned them) at `version`.
pub fn member_records<S: RegistryStore>(
    store: &S,
    record: &SubnetRecord,
    version: RegistryVersion,
) -> Result<Vec<NodeRecord>, LocalError> {
    record
        .members
        .iter()
        .map(|m| need(store, &keys::node_record(m), version).map(|(_, r)| r))
        .collect()
}

fn read<R: RegistryRecord, S: RegistryStore>(
    store: &S,
    key: &str,
    version: RegistryVersion,
) -> Result<Option<(RegistryVersion, R)>, LocalError> {
    let Some((at, bytes)) = store.get_versioned(key, version)? else {
        return Ok(None);
    };
    let r = R::decode_value(&bytes).map_err(|e| LocalError::Malformed {
        version,
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some((at, r)))
}

fn need<R: RegistryRecord, S: RegistryStore>(
    store: &S,
    key: &str,
    version: RegistryVersion,
) -> Result<(RegistryVersion, R), LocalError> {
    read(store, key, version)?.ok_or_else(|| LocalError::Missing {
        version,
        what: key.to_string(),
    })
}

/// The subnet `id` at `version`, with its committee's node records.
pub fn subnet_at<S: RegistryStore>(
    store: &S,
    id: &SubnetId,
    version: RegistryVersion,
) -> Result<SubnetAt, LocalError> {
    let (_, record): (_, SubnetRecord) = need(store, &keys::subnet_record(id), version)?;
    let members = record
        .committee()
        .iter()
        .map(|m| need(store, &keys::node_record(m), version).map(|(_, r)| r))
        .collect::<Result<Vec<NodeRecord>, _>>()?;
    Ok(SubnetAt {
        version,
        record,
        members,
    })
}

/// The subnet `node` is a member of at `version`, if any.
pub fn subnet_of<S: RegistryStore>(
    store: &S,
    node: &NodeId,
    version: RegistryVersion,
) -> Result<Option<SubnetId>, LocalError> {
    let Some((_, list)) = read::<SubnetListRecord, _>(store, keys::SUBNET_LIST, version)? else {
        return Ok(None);
    };
    for id in &list.subnets {
        let (_, s): (_, SubnetRecord) = need(store, &keys::subnet_record(id), version)?;
        if s.members.contains(node) {
            return Ok(Some(*id));
        }
    }
    Ok(None)
}

/// The public APIs (`http://<http_address>`) of the NNS subnet's members at `version`
/// (none without an NNS subnet): where a node learns the NNS nodes beyond the ones its
/// configuration names.
pub fn nns_node_urls<S: RegistryStore>(
    store: &S,
    version: RegistryVersion,
) -> Result<Vec<String>, LocalError> {
    let Some((_, list)) = read::<SubnetListRecord, _>(store, keys::SUBNET_LIST, version)? else {
        return Ok(Vec::new());
    };
    let mut urls = Vec::new();
    for id in &list.subnets {
        let (_, s): (_, SubnetRecord) = need(store, &keys::subnet_record(id), version)?;
        if matches!(s.subnet_kind(), crate::records::SubnetKind::Nns { .. }) {
            for n in member_records(store, &s, version)? {
                urls.push(format!("http://{}", n.http_address));
            }
        }
    }
    Ok(urls)
}

/// The registry CUP of subnet `id` as of `version`: built from its CUP-contents record,
/// deterministically, so every node (and every release) derives the same one. Its
/// registry version is the one that wrote that record.
pub fn registry_cup<S: RegistryStore>(
    store: &S,
    id: &SubnetId,
    version: RegistryVersion,
) -> Result<RegistryCup, LocalError> {
    let (written_at, contents): (_, CupContentsRecord) =
        need(store, &keys::cup_contents(id), version)?;
    let (_, subnet): (_, SubnetRecord) = need(store, &keys::subnet_record(id), written_at)?;
    let seed = codec::encode(&(id, contents.height, written_at, contents.time_ns));
    let block_hash = CryptoHash::of(domain::REGISTRY_CUP, &[b"block".as_slice(), &seed].concat());
    let beacon = CryptoHash::of(
        domain::REGISTRY_CUP,
        &[b"beacon".as_slice(), &seed].concat(),
    );
    Ok(RegistryCup {
        kind: match contents.kind {
            CupContentsKind::Genesis => RegistryCupKind::Genesis,
            CupContentsKind::Recovery => RegistryCupKind::Recovery,
        },
        content: CupContent {
            subnet_id: *id,
            height: contents.height,
            block_hash,
            block_time_ns: contents.time_ns,
            registry_version: written_at,
            replica_version: subnet.replica_version,
            random_beacon: RandomBeacon(beacon.0.to_vec()),
            state_hash: contents.state_hash,
            oldest_registry_version_in_use: written_at,
            next_replica_version: None,
            committee: None,
            extensions: Default::default(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Registry,
        genesis::{NetworkParams, generate_network},
        store::MemoryStore,
    };
    use rand::SeedableRng;

    #[test]
    fn the_nns_nodes_are_the_nns_subnets_members_and_only_theirs() {
        let params = NetworkParams {
            nodes: 2,
            neurons: 1,
            dkg_interval_length: 9,
            unit_delay_ms: 300,
            initial_notary_delay_ms: 100,
            base_port: 20000,
            replica_version: types::ReplicaVersion::new("1.0.0").expect("version"),
            package_sha256: "a".repeat(64),
            package_urls: vec!["http://127.0.0.1:1/one.tar.gz".into()],
            genesis_time_ns: 1_000,
        };
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let mut net = generate_network(&params, &mut rng).expect("generate");
        let open = |net: &crate::genesis::GeneratedNetwork| {
            let mut r = Registry::open(MemoryStore::new()).expect("open");
            r.init(&net.genesis.mutations(), 1).expect("init");
            r
        };
        // One application subnet: no NNS node.
        let r = open(&net);
        assert_eq!(
            nns_node_urls(r.store(), r.latest_version()).expect("read"),
            Vec::<String>::new()
        );
        net.add_nns_subnet(&params, 3, &mut rng)
            .expect("nns subnet");
        let r = open(&net);
        let urls = nns_node_urls(r.store(), r.latest_version()).expect("read");
        let expected: Vec<String> = net
            .nns
            .iter()
            .map(|n| format!("http://{}", n.record.http_address))
            .collect();
        assert_eq!(urls, expected);
        assert_eq!(urls.len(), 3);
    }
}
