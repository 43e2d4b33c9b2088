//! The registry server's HTTP API: paths and the JSON and binary bodies, shared by the
//! server, the client, the replicator and the `nns` tool.
//!
//! | method, path | body | answer |
//! |---|---|---|
//! | `GET /api/v1/registry/version` | | `{"registry_version"}` |
//! | `GET /api/v1/registry/changes?since=V&max=M` | | binary [`ChangesPage`] (canonical codec) |
//! | `GET /api/v1/registry/get?key=K[&at=V]` | | [`GetView`] |
//! | `GET /api/v1/versions?after=V&limit=N` | | [`VersionsPage`] (see paging) |
//! | `GET /api/v1/subnets`, `/nodes`, `/neurons` | | lists of views (`/nodes`: each record with the subnet that lists it, or `null`) |
//! | `POST /api/v1/proposals` | [`SignedSubmission`] | `{"proposal_id"}` |
//! | `POST /api/v1/proposals/{id}/votes` | [`SignedBallot`] | `{"proposal_id","status"}` |
//! | `GET /api/v1/proposals?after=ID&limit=N` | | [`ProposalsPage`] (see paging) |
//! | `GET /api/v1/proposals/{id}` | | [`ProposalView`] |
//! | `GET /api/v1/status` | | [`StatusView`] (with `network_id`) |
//! | `GET /metrics` | | Prometheus text |
//!
//! Paging: lists that governance can grow (proposals, elected versions) come in pages,
//! in ascending order of id or version, of at most `limit` items (capped at
//! [`MAX_PROPOSALS_PER_PAGE`], [`MAX_VERSIONS_PER_LIST_PAGE`]) and about
//! [`MAX_LIST_PAGE_BYTES`] of JSON. With `after` or `limit` the answer is
//! `{"proposals": [...], "next": ID}` (`{"versions": [...], "next": "V"}`); `next` is the
//! `after` of the following page, null on the last. Without either, the answer is the
//! first page as a bare list, the form callers older than paging read.
//!
//! Submissions and ballots name the network they are for (`network`, the registry's
//! `network_id` in `/api/v1/status`); one signed for another network is refused with 400.
//!
//! Every response carries `x-registry-signature`: the registry key's ed25519 signature,
//! domain `REGISTRY_RESPONSE`, over `path-and-query || "\n" || body` (see
//! [`response_message`]), so a client holding the root public key verifies exactly what it
//! got for exactly what it asked. Errors are `{"error": "<reason>"}` with a 4xx or 5xx code.

use crate::{
    governance::{Proposal, ProposalKind, ProposalStatus},
    records::{
        CupContentsRecord, NeuronRecord, NodeRecord, RegistryRecord, ReplicaVersionRecord,
        SubnetListRecord, SubnetRecord, keys,
    },
    store::VersionDelta,
};
use serde::{Deserialize, Serialize};
use types::{NetworkId, NodeId, RegistryVersion, ReplicaVersion, SubnetId};

pub use crate::governance::{SignedBallot, SignedSubmission};

pub const SIGNATURE_HEADER: &str = "x-registry-signature";
/// The most versions in one page of changes.
pub const MAX_VERSIONS_PER_PAGE: usize = 1000;
/// The largest page of changes, in bytes (a page stops early to stay below).
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// The largest response the server sends (its signing layer buffers no more), and so the
/// most a client reads of one.
pub const MAX_RESPONSE_BYTES: usize = MAX_PAGE_BYTES + 1024 * 1024;
/// The most proposals in one page of `GET /api/v1/proposals`.
pub const MAX_PROPOSALS_PER_PAGE: usize = 100;
/// The most elected versions in one page of `GET /api/v1/versions`.
pub const MAX_VERSIONS_PER_LIST_PAGE: usize = 100;
/// The JSON a list page stops at (always at least one item; one item is at most a
/// request body, so a page stays under [`MAX_RESPONSE_BYTES`]).
pub const MAX_LIST_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// What the response signature covers.
pub fn response_message(path_and_query: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(path_and_query.len() + 1 + body.len());
    m.extend_from_slice(path_and_query.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesPage {
    pub latest_version: RegistryVersion,
    pub deltas: Vec<VersionDelta>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    pub registry_version: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetView {
    pub key: String,
    /// The registry version the value is as of.
    pub at: u64,
    /// The version that wrote the value (null if absent).
    pub written_at: Option<u64>,
    /// The raw value, hex (null if absent).
    pub value_hex: Option<String>,
    /// The decoded record, for known key families.
    pub value: Option<serde_json::Value>,
}

impl GetView {
    /// `key` as of version `at`: `found` is the version that wrote it and its value.
    pub fn new(key: &str, at: RegistryVersion, found: Option<(RegistryVersion, Vec<u8>)>) -> Self {
        Self {
            key: key.to_string(),
            at: at.get(),
            written_at: found.as_ref().map(|(v, _)| v.get()),
            value_hex: found.as_ref().map(|(_, b)| hex::encode(b)),
            value: found.as_ref().and_then(|(_, b)| display_value(key, b)),
        }
    }
}

/// A known record as JSON, for people reading `nns get`.
pub fn display_value(key: &str, bytes: &[u8]) -> Option<serde_json::Value> {
    use serde_json::{json, to_value};
    if key == keys::SUBNET_LIST {
        let l = SubnetListRecord::decode_value(bytes).ok()?;
        return to_value(&l.subnets).ok();
    }
    if key.starts_with(keys::SUBNET_RECORD_PREFIX) {
        let r = crate::records::SubnetRecord::decode_value(bytes).ok()?;
        let mut v = to_value(SubnetView::from(&r)).ok()?;
        v["low_threshold_key"] = to_value(&r.low_threshold_key).ok()?;
        v["high_threshold_key"] = to_value(&r.high_threshold_key).ok()?;
        return Some(v);
    }
    if key.starts_with(keys::REPLICA_VERSION_PREFIX) {
        let r = crate::records::ReplicaVersionRecord::decode_value(bytes).ok()?;
        return to_value(ElectedVersionView::from(&r)).ok();
    }
    if key.starts_with(keys::NEURON_PREFIX) {
        let r = crate::records::NeuronRecord::decode_value(bytes).ok()?;
        return to_value(NeuronView::from(&r)).ok();
    }
    if key.starts_with(keys::NODE_RECORD_PREFIX) {
        let r = NodeRecord::decode_value(bytes).ok()?;
        return Some(json!({
            "node_id": r.node_id, "ed25519_public_key": r.ed25519_public_key,
            "bls_public_key": r.bls_public_key, "consensus_address": r.consensus_address,
            "http_address": r.http_address, "cup_address": r.cup_address,
        }));
    }
    if key.starts_with(keys::CUP_CONTENTS_PREFIX) {
        let r = CupContentsRecord::decode_value(bytes).ok()?;
        return Some(json!({
            "kind": r.kind, "height": r.height.get(), "time_ns": r.time_ns, "state_hash": r.state_hash,
        }));
    }
    None
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectedVersionView {
    pub version: ReplicaVersion,
    pub sha256: String,
    pub urls: Vec<String>,
    /// Recalled by governance (`recall_version`): never run again.
    #[serde(default)]
    pub recalled: bool,
}

impl From<&ReplicaVersionRecord> for ElectedVersionView {
    fn from(r: &ReplicaVersionRecord) -> Self {
        Self {
            version: r.version.clone(),
            sha256: r.release_package_sha256_hex.clone(),
            urls: r.release_package_urls.clone(),
            recalled: r.recalled,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetView {
    pub subnet_id: SubnetId,
    pub replica_version: ReplicaVersion,
    pub members: Vec<NodeId>,
    pub dkg_interval_length: u64,
    pub unit_delay_ms: u64,
    pub initial_notary_delay_ms: u64,
    pub halt_at_cup_height: bool,
    pub is_halted: bool,
}

impl From<&SubnetRecord> for SubnetView {
    fn from(r: &SubnetRecord) -> Self {
        Self {
            subnet_id: r.subnet_id,
            replica_version: r.replica_version.clone(),
            members: r.members.clone(),
            dkg_interval_length: r.dkg_interval_length,
            unit_delay_ms: r.unit_delay_ms,
            initial_notary_delay_ms: r.initial_notary_delay_ms,
            halt_at_cup_height: r.halt_at_cup_height,
            is_halted: r.is_halted,
        }
    }
}

/// A node record with the subnet it is a member of (`None`: unassigned), for `nns nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node_id: NodeId,
    pub subnet_id: Option<SubnetId>,
    pub consensus_address: String,
    pub http_address: String,
    pub cup_address: String,
}

impl NodeView {
    /// Every node record of `snap`, each with the subnet that lists it.
    pub fn all(snap: &crate::invariants::Snapshot) -> Vec<Self> {
        let subnet_of: std::collections::BTreeMap<NodeId, SubnetId> = snap
            .subnets
            .values()
            .flat_map(|s| s.members.iter().map(|m| (*m, s.subnet_id)))
            .collect();
        snap.nodes
            .values()
            .map(|r| Self {
                node_id: r.node_id,
                subnet_id: subnet_of.get(&r.node_id).copied(),
                consensus_address: r.consensus_address.clone(),
                http_address: r.http_address.clone(),
                cup_address: r.cup_address.clone(),
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeuronView {
    pub id: u64,
    pub controller: String,
    pub voting_power: u64,
}

impl From<&NeuronRecord> for NeuronView {
    fn from(n: &NeuronRecord) -> Self {
        Self {
            id: n.id,
            controller: n.controller.to_string(),
            voting_power: n.voting_power,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalIdView {
    pub proposal_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResultView {
    pub proposal_id: u64,
    pub status: ProposalStatus,
}

/// A proposal as users see it (INTERFACES.md: `proposal N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalView {
    pub proposal_id: u64,
    pub kind: String,
    pub status: ProposalStatus,
    pub yes: u64,
    pub no: u64,
    pub total: u64,
    pub failure_reason: Option<String>,
    pub proposer: u64,
    pub payload: ProposalKind,
    pub created_ns: u64,
    pub deadline_ns: u64,
    pub decided_ns: Option<u64>,
    pub executed_registry_version: Option<u64>,
}

impl From<&Proposal> for ProposalView {
    fn from(p: &Proposal) -> Self {
        let t = p.tally();
        Self {
            proposal_id: p.id,
            kind: p.kind.name().to_string(),
            status: p.status,
            yes: t.yes,
            no: t.no,
            total: t.total,
            failure_reason: p.failure_reason.clone(),
            proposer: p.proposer,
            payload: p.kind.clone(),
            created_ns: p.created_ns,
            deadline_ns: p.deadline_ns,
            decided_ns: p.decided_ns,
            executed_registry_version: p.executed_registry_version.map(RegistryVersion::get),
        }
    }
}

/// A page of `GET /api/v1/proposals?after=ID&limit=N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalsPage {
    pub proposals: Vec<ProposalView>,
    /// The `after` of the next page; null on the last.
    pub next: Option<u64>,
}

/// A page of `GET /api/v1/versions?after=V&limit=N`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsPage {
    pub versions: Vec<ElectedVersionView>,
    /// The `after` of the next page; null on the last.
    pub next: Option<ReplicaVersion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub registry_version: u64,
    pub proposals_open: usize,
    pub proposals_total: usize,
    pub public_key: String,
    /// The network every submission and ballot must name: the hash of `public_key`.
    pub network_id: NetworkId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
