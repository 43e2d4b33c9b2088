//! The overview the page shows (`GET /api/v1/overview`), built from one refresh's
//! answers by a [`Watcher`] that remembers what earlier refreshes saw: the last answer of
//! every endpoint, since when an endpoint has not answered, the releases deployed to each
//! subnet, and the rollouts ([`crate::rollout`]).
//!
//! Pure: the refresh's answers and the time are arguments, so tests feed it fakes.
//!
//! Degrading: when the registry does not answer, the last registry read stays on the page
//! (its age and the error shown) and the nodes it named are still polled; when a node's
//! endpoint does not answer, its row keeps the last values it gave, marked stale, and says
//! since when it has not answered.

use crate::{
    MAX_ROLLOUTS,
    answers::{
        NodeAddress, NodeAnswers, OrchestratorStatus, ReadinessWord, RegistryRead, ReplicaStatus,
    },
    rollout::{self, Origin, Rollout},
};
use registry::governance::{ProposalKind, ProposalStatus};
use serde::Serialize;
use std::collections::BTreeMap;
use types::{NodeId, ReplicaVersion, SubnetId};

/// Everything the page shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overview {
    pub generated_unix_ms: u64,
    /// Refreshes since the dashboard started (the page shows it moving).
    pub refresh: u64,
    pub registry: RegistryPanel,
    pub subnets: Vec<SubnetRow>,
    pub versions: Vec<VersionRow>,
    pub proposals: Vec<ProposalRow>,
    pub nodes: Vec<NodeRow>,
    /// Newest first.
    pub rollouts: Vec<Rollout>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegistryPanel {
    pub url: String,
    /// Answers are checked against `--registry-key`.
    pub verified: bool,
    pub reachable: bool,
    pub error: Option<String>,
    /// Since when it has not answered (null while it answers).
    pub unreachable_since_unix_ms: Option<u64>,
    /// When the data shown was read (null before the first read).
    pub read_unix_ms: Option<u64>,
    pub registry_version: Option<u64>,
    pub network_id: Option<String>,
    pub proposals_open: Option<usize>,
    pub proposals_total: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubnetRow {
    pub subnet_id: SubnetId,
    /// The release the registry deploys to it.
    pub replica_version: ReplicaVersion,
    pub members: Vec<MemberRow>,
    pub dkg_interval_length: u64,
    pub halt_at_cup_height: bool,
    pub is_halted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberRow {
    pub node_id: NodeId,
    /// As the node last said (null before it answered).
    pub running_version: Option<ReplicaVersion>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersionRow {
    pub version: ReplicaVersion,
    pub sha256: String,
    pub urls: Vec<String>,
    pub status: VersionStatus,
    pub deployed_to: Vec<SubnetId>,
    /// Nodes that last said they run it.
    pub running_on: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProposalRow {
    pub proposal_id: u64,
    pub kind: String,
    /// What it does, in a few words.
    pub summary: String,
    pub status: ProposalStatus,
    /// Voting power for and against, of `total`.
    pub yes: u64,
    pub no: u64,
    pub total: u64,
    pub created_unix_ms: u64,
    pub deadline_unix_ms: u64,
    pub failure_reason: Option<String>,
}

/// Whether a node's two endpoints answered the latest refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Both answered.
    Up,
    /// One of them answered.
    Partial,
    /// Neither answered.
    Unreachable,
    /// Not polled yet.
    Unknown,
}

impl Reachability {
    pub const ALL: [Reachability; 4] = [
        Reachability::Up,
        Reachability::Partial,
        Reachability::Unreachable,
        Reachability::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reachability::Up => "up",
            Reachability::Partial => "partial",
            Reachability::Unreachable => "unreachable",
            Reachability::Unknown => "unknown",
        }
    }
}

/// Where an elected version stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Governance recalled it: never run again.
    Recalled,
    /// Some subnet's release.
    Deployed,
    /// Elected, deployed nowhere.
    Elected,
}

/// One endpoint of a node, as the latest refresh found it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointRow {
    pub url: String,
    pub ok: bool,
    pub error: Option<String>,
    pub failing_since_unix_ms: Option<u64>,
    pub last_answer_unix_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeRow {
    pub node_id: NodeId,
    pub subnet_id: Option<SubnetId>,
    pub reachability: Reachability,
    /// Since when neither endpoint has answered.
    pub unreachable_since_unix_ms: Option<u64>,
    pub replica: EndpointRow,
    pub orchestrator: EndpointRow,
    /// The fields below are the endpoints' last answers: stale when `ok` is false.
    pub running_version: Option<ReplicaVersion>,
    pub upgrade_state: Option<String>,
    pub target_version: Option<ReplicaVersion>,
    pub last_error: Option<String>,
    /// After a switch: `watching`, `healthy` or `unhealthy`, and why.
    pub health: Option<String>,
    pub health_reason: Option<String>,
    pub finalized_height: Option<u64>,
    pub certified_height: Option<u64>,
    pub cup_height: Option<u64>,
    pub state_schema: Option<u32>,
    pub halting: Option<bool>,
    pub halted: Option<bool>,
    pub storage_error: Option<String>,
    /// This node's latest word on the deployed release, as any replica reports it.
    pub readiness: Option<String>,
}

/// One endpoint's memory: the last answer and the current failure streak.
#[derive(Clone, Debug)]
struct Endpoint<T> {
    last: Option<(T, u64)>,
    error: Option<String>,
    failing_since: Option<u64>,
}

impl<T> Default for Endpoint<T> {
    fn default() -> Self {
        Self {
            last: None,
            error: None,
            failing_since: None,
        }
    }
}

impl<T: Clone> Endpoint<T> {
    /// Records this refresh's result; the answer if there was one.
    fn record(&mut self, now: u64, result: &Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => {
                self.last = Some((v.clone(), now));
                self.error = None;
                self.failing_since = None;
                Some(v.clone())
            }
            Err(e) => {
                self.error = Some(e.clone());
                self.failing_since.get_or_insert(now);
                None
            }
        }
    }

    fn value(&self) -> Option<&T> {
        self.last.as_ref().map(|(v, _)| v)
    }

    fn polled(&self) -> bool {
        self.last.is_some() || self.error.is_some()
    }

    fn row(&self, url: String) -> EndpointRow {
        EndpointRow {
            url,
            ok: self.polled() && self.error.is_none(),
            error: self.error.clone(),
            failing_since_unix_ms: self.failing_since,
            last_answer_unix_ms: self.last.as_ref().map(|(_, t)| *t),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct NodeMemory {
    replica: Endpoint<ReplicaStatus>,
    orchestrator: Endpoint<OrchestratorStatus>,
}

/// Remembers across refreshes; [`Watcher::observe`] makes each overview.
#[derive(Debug)]
pub struct Watcher {
    registry_url: String,
    verified: bool,
    registry: Endpoint<RegistryRead>,
    nodes: BTreeMap<NodeId, NodeMemory>,
    /// The release each subnet was last seen deployed to.
    deployed: BTreeMap<SubnetId, ReplicaVersion>,
    /// Newest first, at most [`MAX_ROLLOUTS`].
    rollouts: Vec<Rollout>,
    refreshes: u64,
}

impl Watcher {
    pub fn new(registry_url: &str, verified: bool) -> Self {
        Self {
            registry_url: registry_url.to_string(),
            verified,
            registry: Endpoint::default(),
            nodes: BTreeMap::new(),
            deployed: BTreeMap::new(),
            rollouts: Vec::new(),
            refreshes: 0,
        }
    }

    /// The nodes to poll: those the last good registry read named.
    pub fn known_nodes(&self) -> Vec<NodeAddress> {
        self.registry
            .value()
            .map(|r| r.nodes.clone())
            .unwrap_or_default()
    }

    /// Takes one refresh's answers (`registry` read beside polling [`Self::known_nodes`]).
    pub fn observe(
        &mut self,
        now: u64,
        registry: Result<RegistryRead, String>,
        answers: Vec<NodeAnswers>,
    ) -> Overview {
        self.refreshes += 1;
        self.registry.record(now, &registry);
        let mut current: BTreeMap<NodeId, (Option<ReplicaStatus>, Option<OrchestratorStatus>)> =
            BTreeMap::new();
        for a in &answers {
            let m = self.nodes.entry(a.node_id).or_default();
            let r = m.replica.record(now, &a.replica);
            let o = m.orchestrator.record(now, &a.orchestrator);
            current.insert(a.node_id, (r, o));
        }
        self.follow_rollouts(now, &current);
        self.overview(now)
    }

    fn follow_rollouts(
        &mut self,
        now: u64,
        current: &BTreeMap<NodeId, (Option<ReplicaStatus>, Option<OrchestratorStatus>)>,
    ) {
        let Some(reg) = self.registry.value() else {
            return;
        };
        let words: Vec<&ReadinessWord> = current
            .values()
            .filter_map(|(r, _)| r.as_ref())
            .flat_map(|r| &r.readiness)
            .collect();
        for s in &reg.subnets {
            let v = &s.replica_version;
            // The release before this one, if the dashboard saw the subnet on another.
            let previous = self
                .deployed
                .insert(s.subnet_id, v.clone())
                .filter(|p| p != v);
            let newest = self
                .rollouts
                .iter()
                .position(|r| r.subnet_id == s.subnet_id);
            let follows_v = newest.is_some_and(|i| &self.rollouts[i].version == v);
            let origin = if previous.is_some() {
                Some(Origin::Deployed)
            } else if !follows_v
                && s.members.iter().any(|m| {
                    current
                        .get(m)
                        .and_then(|(r, o)| {
                            o.as_ref()
                                .map(|o| &o.running_version)
                                .or(r.as_ref().map(|r| &r.replica_version))
                        })
                        .is_some_and(|running| running != v)
                })
            {
                Some(Origin::UnderWay)
            } else {
                None
            };
            if let Some(origin) = origin {
                let r = Rollout::new(s.subnet_id, v.clone(), previous, origin, &s.members, now);
                self.rollouts.insert(0, r);
                self.rollouts.truncate(MAX_ROLLOUTS);
            }
            let Some(rollout) = self
                .rollouts
                .iter_mut()
                .find(|r| r.subnet_id == s.subnet_id)
                .filter(|r| &r.version == v)
            else {
                continue;
            };
            for m in &s.members {
                let (r, o) = current.get(m).cloned().unwrap_or_default();
                let e = rollout::evidence(v, m, r.as_ref(), o.as_ref(), &words);
                rollout.observe(now, m, &e);
            }
        }
    }

    fn overview(&self, now: u64) -> Overview {
        let reg = self.registry.value();
        let running = |n: &NodeId| -> Option<ReplicaVersion> {
            let m = self.nodes.get(n)?;
            m.orchestrator
                .value()
                .map(|o| o.running_version.clone())
                .or_else(|| m.replica.value().map(|r| r.replica_version.clone()))
        };
        let subnets: Vec<SubnetRow> = reg
            .map(|r| r.subnets.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|s| SubnetRow {
                subnet_id: s.subnet_id,
                replica_version: s.replica_version.clone(),
                members: s
                    .members
                    .iter()
                    .map(|m| MemberRow {
                        node_id: *m,
                        running_version: running(m),
                    })
                    .collect(),
                dkg_interval_length: s.dkg_interval_length,
                halt_at_cup_height: s.halt_at_cup_height,
                is_halted: s.is_halted,
            })
            .collect();
        let nodes: Vec<NodeRow> = self
            .known_nodes()
            .iter()
            .map(|a| self.node_row(a))
            .collect();
        let versions = reg
            .map(|r| r.versions.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|v| {
                let deployed_to: Vec<SubnetId> = subnets
                    .iter()
                    .filter(|s| s.replica_version == v.version)
                    .map(|s| s.subnet_id)
                    .collect();
                VersionRow {
                    version: v.version.clone(),
                    sha256: v.sha256.clone(),
                    urls: v.urls.clone(),
                    status: if v.recalled {
                        VersionStatus::Recalled
                    } else if deployed_to.is_empty() {
                        VersionStatus::Elected
                    } else {
                        VersionStatus::Deployed
                    },
                    deployed_to,
                    running_on: nodes
                        .iter()
                        .filter(|n| n.running_version.as_ref() == Some(&v.version))
                        .count(),
                }
            })
            .collect();
        let mut proposals: Vec<ProposalRow> = reg
            .map(|r| r.proposals.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|p| ProposalRow {
                proposal_id: p.proposal_id,
                kind: p.kind.clone(),
                summary: summary(&p.payload),
                status: p.status,
                yes: p.yes,
                no: p.no,
                total: p.total,
                created_unix_ms: p.created_ns / 1_000_000,
                deadline_unix_ms: p.deadline_ns / 1_000_000,
                failure_reason: p.failure_reason.clone(),
            })
            .collect();
        // Open ones first, then newest first.
        proposals.sort_by_key(|p| {
            (
                p.status != ProposalStatus::Open,
                std::cmp::Reverse(p.proposal_id),
            )
        });
        Overview {
            generated_unix_ms: now,
            refresh: self.refreshes,
            registry: RegistryPanel {
                url: self.registry_url.clone(),
                verified: self.verified,
                reachable: self.registry.error.is_none() && self.registry.polled(),
                error: self.registry.error.clone(),
                unreachable_since_unix_ms: self.registry.failing_since,
                read_unix_ms: self.registry.last.as_ref().map(|(_, t)| *t),
                registry_version: reg.map(|r| r.registry_version),
                network_id: reg.map(|r| r.network_id.clone()),
                proposals_open: reg.map(|r| r.proposals_open),
                proposals_total: reg.map(|r| r.proposals_total),
            },
            subnets,
            versions,
            proposals,
            nodes,
            rollouts: self.rollouts.clone(),
        }
    }

    fn node_row(&self, a: &NodeAddress) -> NodeRow {
        let empty = NodeMemory::default();
        let m = self.nodes.get(&a.node_id).unwrap_or(&empty);
        let r = m.replica.value();
        let o = m.orchestrator.value();
        let replica = m
            .replica
            .row(format!("http://{}/api/v1/status", a.http_address));
        let orchestrator = m
            .orchestrator
            .row(format!("http://{}/status", a.cup_address));
        let (reachability, unreachable_since) = match (replica.ok, orchestrator.ok) {
            (true, true) => (Reachability::Up, None),
            (true, false) | (false, true) => (Reachability::Partial, None),
            (false, false) if !m.replica.polled() && !m.orchestrator.polled() => {
                (Reachability::Unknown, None)
            }
            (false, false) => (
                Reachability::Unreachable,
                replica
                    .failing_since_unix_ms
                    .max(orchestrator.failing_since_unix_ms),
            ),
        };
        let readiness = self.readiness_of(&a.node_id).map(|w| {
            if w.ready {
                format!("ready for {}", w.version)
            } else {
                format!("not ready for {}: {}", w.version, w.reason)
            }
        });
        NodeRow {
            node_id: a.node_id,
            subnet_id: a.subnet_id,
            reachability,
            unreachable_since_unix_ms: unreachable_since,
            running_version: o
                .map(|o| o.running_version.clone())
                .or_else(|| r.map(|r| r.replica_version.clone())),
            upgrade_state: o.map(|o| o.upgrade.state.clone()),
            target_version: o.and_then(|o| o.upgrade.target_version.clone()),
            last_error: o.and_then(|o| o.upgrade.last_error.clone()),
            health: o
                .and_then(|o| o.upgrade.health.as_ref())
                .map(|h| h.state.clone()),
            health_reason: o
                .and_then(|o| o.upgrade.health.as_ref())
                .and_then(|h| h.reason.clone()),
            finalized_height: r.map(|r| r.finalized_height),
            certified_height: r.map(|r| r.certified_height),
            cup_height: r
                .map(|r| r.cup_height)
                .or(o.and_then(|o| o.cup.as_ref().map(|c| c.height))),
            state_schema: r.and_then(|r| r.state_schema),
            halting: r.map(|r| r.halting),
            halted: r.map(|r| r.halted),
            storage_error: r.and_then(|r| r.storage_error.clone()),
            readiness,
            replica,
            orchestrator,
        }
    }

    /// `node`'s latest word (highest height) in any replica's last answer.
    fn readiness_of(&self, node: &NodeId) -> Option<&ReadinessWord> {
        self.nodes
            .values()
            .filter_map(|m| m.replica.value())
            .flat_map(|r| &r.readiness)
            .filter(|w| &w.node_id == node)
            .max_by_key(|w| w.height)
    }
}

/// A proposal's payload in a few words (ids shortened; the page shows the full record's
/// kind beside it).
pub fn summary(kind: &ProposalKind) -> String {
    let short = |id: &dyn std::fmt::Display| id.to_string().chars().take(8).collect::<String>();
    match kind {
        ProposalKind::ElectVersion {
            version,
            sha256_hex,
            urls,
        } => format!(
            "elect {version} (sha256 {}…, {} URL{})",
            &sha256_hex.chars().take(12).collect::<String>(),
            urls.len(),
            if urls.len() == 1 { "" } else { "s" }
        ),
        ProposalKind::RetireVersion { versions } => {
            let list: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
            format!("retire {}", list.join(", "))
        }
        ProposalKind::DeployVersion { subnet, version } => {
            format!("deploy {version} to subnet {}…", short(subnet))
        }
        ProposalKind::UpdateSubnetConfig { subnet, .. } => {
            format!("change the configuration of subnet {}…", short(subnet))
        }
        ProposalKind::RecallVersion { version } => format!("recall {version}"),
        ProposalKind::RecoverSubnet {
            subnet,
            version,
            height,
            ..
        } => format!(
            "recover subnet {}… onto {version} from height {}",
            short(subnet),
            height.get()
        ),
        ProposalKind::AddNodes { subnet, nodes } => format!(
            "add {} node{} to subnet {}…",
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            short(subnet)
        ),
        ProposalKind::RemoveNodes { subnet, nodes } => format!(
            "remove {} node{} from subnet {}…",
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            short(subnet)
        ),
    }
}
