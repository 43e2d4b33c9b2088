//! What the dashboard reads, typed: the registry's lists (through
//! [`registry::client::RegistryClient`]) and the two status answers every node serves, the
//! replica's `GET /api/v1/status` and the orchestrator's `GET /status`.
//!
//! The node answers are read as an outside observer reads them, with only the fields the
//! page shows. Fields that older releases lack are `#[serde(default)]`; a field that is
//! there with the wrong type makes the whole answer unreadable, which the page shows as
//! such (a typed reader fails loudly rather than showing a wrong value).

use registry::api::{ElectedVersionView, ProposalView, SubnetView};
use serde::Deserialize;
use types::{NodeId, ReplicaVersion, SubnetId};

/// One read of the registry: its status, the lists the page shows, and where each
/// subnet member serves.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryRead {
    pub registry_version: u64,
    pub network_id: String,
    pub proposals_open: usize,
    pub proposals_total: usize,
    pub subnets: Vec<SubnetView>,
    pub versions: Vec<ElectedVersionView>,
    /// The newest proposals, ascending by id (at most [`crate::RECENT_PROPOSALS`]).
    pub proposals: Vec<ProposalView>,
    /// Every subnet member's addresses, from its node record.
    pub nodes: Vec<NodeAddress>,
}

/// Where a node serves, from its registry record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    pub node_id: NodeId,
    pub subnet_id: Option<SubnetId>,
    /// The replica's public HTTP API, `ip:port`.
    pub http_address: String,
    /// The orchestrator's endpoint (`/status`, CUPs), `ip:port`.
    pub cup_address: String,
}

/// The replica's `GET /api/v1/status`, the fields shown.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ReplicaStatus {
    pub replica_version: ReplicaVersion,
    pub node_id: NodeId,
    pub finalized_height: u64,
    pub certified_height: u64,
    pub cup_height: u64,
    #[serde(default)]
    pub state_schema: Option<u32>,
    #[serde(default)]
    pub peers_connected: Option<u64>,
    /// This release's last summary is finalized; it waits for the CUP at it.
    #[serde(default)]
    pub halting: bool,
    /// The CUP at the halting height exists: the old release is done.
    #[serde(default)]
    pub halted: bool,
    #[serde(default)]
    pub storage_error: Option<String>,
    /// Every node's latest word on the deployed release, as this replica knows them.
    #[serde(default)]
    pub readiness: Vec<ReadinessWord>,
}

/// One node's word on the deployed release, as a replica's status carries it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ReadinessWord {
    pub node_id: NodeId,
    pub version: ReplicaVersion,
    pub ready: bool,
    #[serde(default)]
    pub reason: String,
    /// The node's finalized height when it said so.
    #[serde(default)]
    pub height: u64,
}

/// The orchestrator's `GET /status`, the fields shown.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct OrchestratorStatus {
    pub node_id: NodeId,
    pub running_version: ReplicaVersion,
    #[serde(default)]
    pub cup: Option<CupSeen>,
    pub upgrade: UpgradeSeen,
}

/// `/status`'s `cup`: the best CUP this node knows.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CupSeen {
    pub height: u64,
    /// The release that made it.
    pub replica_version: ReplicaVersion,
}

/// `/status`'s `upgrade`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct UpgradeSeen {
    /// `idle`, `downloading`, `preflight`, `ready`, `switching`, `failed`, `recalled`.
    pub state: String,
    #[serde(default)]
    pub target_version: Option<ReplicaVersion>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub preflight: Option<PreflightSeen>,
    #[serde(default)]
    pub health: Option<HealthSeen>,
}

/// `upgrade.preflight`: the deployed release's rehearsal on this node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PreflightSeen {
    pub version: ReplicaVersion,
    pub ok: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `upgrade.health`: after this node switched, whether the new release works.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct HealthSeen {
    /// `watching`, `healthy` or `unhealthy`.
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub switched_at_cup_height: u64,
}

/// What one refresh got from one node: each endpoint's answer, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAnswers {
    pub node_id: NodeId,
    pub replica: Result<ReplicaStatus, String>,
    pub orchestrator: Result<OrchestratorStatus, String>,
}
