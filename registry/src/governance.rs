//! NNS-style governance as a deterministic state machine: no I/O, no clock (time is an
//! argument), no randomness.
//!
//! # Rules (normative)
//!
//! - A *neuron* (registry record `neuron_<id>`) has a controller ed25519 key and voting
//!   power. Submissions and votes are signed by the controller over the canonical encoding
//!   of what they say (domains `GOVERNANCE_PROPOSAL`, `GOVERNANCE_VOTE`), which names the
//!   network ([`NetworkId`], the hash of the registry's root key): a registry refuses
//!   what was signed for another network, so a neuron key used on two networks cannot
//!   have its proposals or votes replayed from one to the other.
//! - The network and the signature are checked first ([`SignedSubmission::verify`],
//!   [`SignedBallot::verify`]), with nothing but the neuron's controller key; only a
//!   [`VerifiedSubmission`] or [`VerifiedBallot`] reaches the registry state, so a badly
//!   signed request costs one signature check and no more.
//! - A proposal is validated against the registry when it is submitted (a deploy of an
//!   unelected version, a retire of a version in use, a bad SHA-256 or URL are refused
//!   and never become proposals) and again, by the registry's invariants, when it
//!   executes.
//! - Ballots snapshot every neuron's voting power when the proposal is made; the proposer
//!   votes yes at once. A neuron votes once.
//! - Adopted at once when yes > total / 2; rejected at once when no >= total / 2. At the
//!   deadline (created + voting period), adopted iff yes > no and yes >= 3% of total, else
//!   rejected.
//! - An adopted proposal executes its registry batch; the result is recorded: *executed*
//!   at a registry version, or *failed* with the reason. A batch is a function of the
//!   proposal, the registry, and one time: the submission's when validating, the
//!   adoption's when executing (a recovery CUP's time).
//!
//! - A recalled version (`recall_version`) stays elected, marked `recalled`; it cannot be
//!   deployed or recovered onto, and orchestrators never run it (`orchestrator::decide`).
//!
//! Status: open -> adopted -> executed | failed; open -> rejected.

use crate::{
    invariants::{Snapshot, check_version},
    records::{CupContentsKind, CupContentsRecord, RegistryRecord, ReplicaVersionRecord, keys},
    store::Mutation,
};
use crypto::ed25519::{Ed25519KeyPair, Ed25519PublicKey, Ed25519Signature};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use types::{
    CryptoHash, Height, NetworkId, NodeId, RegistryVersion, ReplicaVersion, SubnetId, codec, domain,
};

pub type NeuronId = u64;
pub type ProposalId = u64;

/// Default voting period: 4 days, as on the NNS.
pub const DEFAULT_VOTING_PERIOD_NS: u64 = 4 * 24 * 3600 * 1_000_000_000;
/// The most open proposals at once (a bound on state and on work per deadline check).
pub const MAX_OPEN_PROPOSALS: usize = 1000;
/// The most proposals [`Governance::process_deadlines`] decides in one call: when many
/// reach their deadline together, the rest are decided on the next tick.
pub const MAX_DEADLINE_DECISIONS_PER_CALL: usize = 100;

/// What a proposal asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// Elect a release: it may then be deployed.
    ElectVersion {
        version: ReplicaVersion,
        sha256_hex: String,
        urls: Vec<String>,
    },
    /// Retire elected releases that no subnet runs.
    RetireVersion { versions: Vec<ReplicaVersion> },
    /// Make a subnet run an elected release.
    DeployVersion {
        subnet: SubnetId,
        version: ReplicaVersion,
    },
    /// Change a subnet's halting flags or consensus delays.
    UpdateSubnetConfig {
        subnet: SubnetId,
        halt_at_cup_height: Option<bool>,
        is_halted: Option<bool>,
        unit_delay_ms: Option<u64>,
        initial_notary_delay_ms: Option<u64>,
        dkg_interval_length: Option<u64>,
    },
    /// Recall an elected release: no orchestrator downloads, rehearses or starts it again
    /// (a node whose CUP names it waits for a recovery), and it can no longer be
    /// deployed or recovered onto.
    RecallVersion { version: ReplicaVersion },
    /// Bring a stuck subnet back: it runs `version` from a recovery CUP at `height` whose
    /// state is the one with `state_hash` (an operator reads both from any node's
    /// `/status`). Every orchestrator of the subnet prefers that CUP to any signed one at
    /// or below `height`.
    RecoverSubnet {
        subnet: SubnetId,
        version: ReplicaVersion,
        height: Height,
        state_hash: CryptoHash,
    },
    /// Add registered nodes that are in no subnet to a subnet. The subnet reshares its
    /// threshold keys to its new membership (the group keys stay) and the nodes join
    /// from the first CUP that names them.
    AddNodes {
        subnet: SubnetId,
        nodes: Vec<NodeId>,
    },
    /// Remove members from a subnet: they leave at the first CUP without them (which
    /// the reshared keys sign), wipe the subnet's state and wait unassigned.
    RemoveNodes {
        subnet: SubnetId,
        nodes: Vec<NodeId>,
    },
}

impl ProposalKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ElectVersion { .. } => "elect_version",
            Self::RetireVersion { .. } => "retire_version",
            Self::DeployVersion { .. } => "deploy_version",
            Self::UpdateSubnetConfig { .. } => "update_subnet_config",
            Self::RecoverSubnet { .. } => "recover_subnet",
            Self::RecallVersion { .. } => "recall_version",
            Self::AddNodes { .. } => "add_nodes",
            Self::RemoveNodes { .. } => "remove_nodes",
        }
    }
}

/// A proposal as its proposer signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The network the proposal is for; another network's registry refuses it.
    pub network: NetworkId,
    pub neuron_id: NeuronId,
    /// Distinguishes two otherwise identical submissions; a replay is refused.
    pub nonce: u64,
    pub kind: ProposalKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSubmission {
    pub submission: Submission,
    pub signature: Ed25519Signature,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    Yes,
    No,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    /// The network the vote is for; another network's registry refuses it.
    pub network: NetworkId,
    pub proposal_id: ProposalId,
    pub neuron_id: NeuronId,
    pub vote: Vote,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBallot {
    pub ballot: Ballot,
    pub signature: Ed25519Signature,
}

impl SignedSubmission {
    pub fn sign(submission: Submission, key: &Ed25519KeyPair) -> Self {
        let signature = key.sign(domain::GOVERNANCE_PROPOSAL, &codec::encode(&submission));
        Self {
            submission,
            signature,
        }
    }

    /// Refuses a submission signed for another network (no state needed).
    pub fn check_network(&self, network: &NetworkId) -> Result<(), GovernanceError> {
        check_network(&self.submission.network, network)
    }

    /// The network, then the signature against the neuron's `controller` key.
    pub fn verify(
        &self,
        network: &NetworkId,
        controller: &Ed25519PublicKey,
    ) -> Result<VerifiedSubmission, GovernanceError> {
        self.check_network(network)?;
        let s = &self.submission;
        controller
            .verify(
                domain::GOVERNANCE_PROPOSAL,
                &codec::encode(s),
                &self.signature,
            )
            .map_err(|_| GovernanceError::BadSignature(s.neuron_id))?;
        Ok(VerifiedSubmission {
            submission: s.clone(),
            controller: *controller,
        })
    }
}

impl SignedBallot {
    pub fn sign(ballot: Ballot, key: &Ed25519KeyPair) -> Self {
        let signature = key.sign(domain::GOVERNANCE_VOTE, &codec::encode(&ballot));
        Self { ballot, signature }
    }

    /// Refuses a ballot signed for another network (no state needed).
    pub fn check_network(&self, network: &NetworkId) -> Result<(), GovernanceError> {
        check_network(&self.ballot.network, network)
    }

    /// The network, then the signature against the neuron's `controller` key.
    pub fn verify(
        &self,
        network: &NetworkId,
        controller: &Ed25519PublicKey,
    ) -> Result<VerifiedBallot, GovernanceError> {
        self.check_network(network)?;
        let b = &self.ballot;
        controller
            .verify(domain::GOVERNANCE_VOTE, &codec::encode(b), &self.signature)
            .map_err(|_| GovernanceError::BadSignature(b.neuron_id))?;
        Ok(VerifiedBallot {
            ballot: b.clone(),
            controller: *controller,
        })
    }
}

fn check_network(signed_for: &NetworkId, network: &NetworkId) -> Result<(), GovernanceError> {
    if signed_for != network {
        return Err(GovernanceError::WrongNetwork {
            signed_for: *signed_for,
            expected: *network,
        });
    }
    Ok(())
}

/// A submission whose network and signature checked out against `controller`; only
/// [`SignedSubmission::verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSubmission {
    submission: Submission,
    controller: Ed25519PublicKey,
}

impl VerifiedSubmission {
    pub fn submission(&self) -> &Submission {
        &self.submission
    }

    /// The key the signature verified against.
    pub fn controller(&self) -> &Ed25519PublicKey {
        &self.controller
    }
}

/// A ballot whose network and signature checked out against `controller`; only
/// [`SignedBallot::verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBallot {
    ballot: Ballot,
    controller: Ed25519PublicKey,
}

impl VerifiedBallot {
    pub fn ballot(&self) -> &Ballot {
        &self.ballot
    }

    /// The key the signature verified against.
    pub fn controller(&self) -> &Ed25519PublicKey {
        &self.controller
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Open,
    Adopted,
    Rejected,
    Executed,
    Failed,
}

impl ProposalStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Adopted => "adopted",
            Self::Rejected => "rejected",
            Self::Executed => "executed",
            Self::Failed => "failed",
        }
    }

    /// Whether no later decision can change it (rejected, executed or failed).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Rejected | Self::Executed | Self::Failed)
    }
}

/// A neuron's ballot: its voting power when the proposal was made, and its vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BallotBox {
    pub voting_power: u64,
    pub vote: Option<Vote>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: ProposalId,
    pub proposer: NeuronId,
    pub nonce: u64,
    pub kind: ProposalKind,
    pub created_ns: u64,
    pub deadline_ns: u64,
    pub ballots: BTreeMap<NeuronId, BallotBox>,
    pub status: ProposalStatus,
    pub decided_ns: Option<u64>,
    pub executed_registry_version: Option<RegistryVersion>,
    pub failure_reason: Option<String>,
}

/// Vote totals in voting power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub yes: u64,
    pub no: u64,
    pub total: u64,
}

impl Proposal {
    pub fn tally(&self) -> Tally {
        let mut t = Tally {
            yes: 0,
            no: 0,
            total: 0,
        };
        for b in self.ballots.values() {
            t.total += b.voting_power;
            match b.vote {
                Some(Vote::Yes) => t.yes += b.voting_power,
                Some(Vote::No) => t.no += b.voting_power,
                None => {}
            }
        }
        t
    }

    /// The absolute-majority rule, applied after every vote.
    fn decide_early(&mut self, now_ns: u64) {
        let t = self.tally();
        let status = if u128::from(t.yes) * 2 > u128::from(t.total) {
            ProposalStatus::Adopted
        } else if u128::from(t.no) * 2 >= u128::from(t.total) {
            ProposalStatus::Rejected
        } else {
            return;
        };
        self.status = status;
        self.decided_ns = Some(now_ns);
    }

    /// The deadline rule.
    fn decide_at_deadline(&mut self, now_ns: u64) {
        let t = self.tally();
        let adopted = t.yes > t.no && u128::from(t.yes) * 100 >= u128::from(t.total) * 3;
        self.status = if adopted {
            ProposalStatus::Adopted
        } else {
            ProposalStatus::Rejected
        };
        self.decided_ns = Some(now_ns);
    }
}

/// What became of a governance call an NNS subnet executed (issue 19): what its nodes
/// keep for the caller to read, and what `nns` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GovernanceReply {
    /// The proposal was recorded (and executed already, if its proposer alone had a
    /// majority).
    Proposed { proposal_id: ProposalId },
    /// The vote was counted; the proposal's status after it.
    Voted {
        proposal_id: ProposalId,
        status: ProposalStatus,
    },
    /// Refused, with governance's or the registry's reason; nothing changed.
    Refused { reason: String },
}

/// Why governance refused a submission or a vote. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GovernanceError {
    #[error("signed for network {signed_for}, but this registry is network {expected}")]
    WrongNetwork {
        signed_for: NetworkId,
        expected: NetworkId,
    },
    #[error("neuron {0} does not exist")]
    UnknownNeuron(NeuronId),
    #[error("the signature is not by neuron {0}'s controller key")]
    BadSignature(NeuronId),
    #[error(
        "neuron {neuron} already submitted a proposal with nonce {nonce} (proposal {existing})"
    )]
    Replay {
        neuron: NeuronId,
        nonce: u64,
        existing: ProposalId,
    },
    #[error("invalid proposal: {0}")]
    Invalid(String),
    #[error("proposal {0} does not exist")]
    UnknownProposal(ProposalId),
    #[error("proposal {id} is {status} and takes no more votes", status = .status.name())]
    NotOpen {
        id: ProposalId,
        status: ProposalStatus,
    },
    #[error(
        "neuron {neuron} has no ballot on proposal {proposal} (it did not exist when the proposal was made)"
    )]
    NoBallot {
        neuron: NeuronId,
        proposal: ProposalId,
    },
    #[error("neuron {neuron} already voted on proposal {proposal}")]
    AlreadyVoted {
        neuron: NeuronId,
        proposal: ProposalId,
    },
    #[error("too many open proposals ({0}); wait for some to be decided")]
    TooManyOpen(usize),
}

/// All proposals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    pub voting_period_ns: u64,
    pub next_proposal_id: ProposalId,
    pub proposals: BTreeMap<ProposalId, Proposal>,
}

impl Governance {
    pub fn new(voting_period_ns: u64) -> Self {
        Self {
            voting_period_ns,
            next_proposal_id: 1,
            proposals: BTreeMap::new(),
        }
    }

    /// The first proposal id whose proposal may still change: the oldest one not final,
    /// or the next id when every proposal is. Everything below it is settled for good.
    pub fn first_unsettled(&self) -> ProposalId {
        self.proposals
            .values()
            .find(|p| !p.status.is_final())
            .map_or(self.next_proposal_id, |p| p.id)
    }

    /// Validates and records a verified proposal. Returns its id. `check` is the
    /// registry's full validation of the batch the proposal would execute today
    /// (preconditions and invariants), so that what could never execute is refused up
    /// front.
    pub fn submit(
        &mut self,
        registry: &Snapshot,
        now_ns: u64,
        verified: &VerifiedSubmission,
        check: &dyn Fn(&[Mutation]) -> Result<(), String>,
    ) -> Result<ProposalId, GovernanceError> {
        let s = &verified.submission;
        let neuron = registry
            .neurons
            .get(&s.neuron_id)
            .ok_or(GovernanceError::UnknownNeuron(s.neuron_id))?;
        // The signature was checked against the key the neuron had then; it must still
        // be the neuron's key.
        if neuron.controller != verified.controller {
            return Err(GovernanceError::BadSignature(s.neuron_id));
        }
        if let Some(p) = self
            .proposals
            .values()
            .find(|p| p.proposer == s.neuron_id && p.nonce == s.nonce)
        {
            return Err(GovernanceError::Replay {
                neuron: s.neuron_id,
                nonce: s.nonce,
                existing: p.id,
            });
        }
        // One past its deadline is as good as decided (the next tick decides it).
        let open = self
            .proposals
            .values()
            .filter(|p| p.status == ProposalStatus::Open && now_ns < p.deadline_ns)
            .count();
        if open >= MAX_OPEN_PROPOSALS {
            return Err(GovernanceError::TooManyOpen(open));
        }
        // Validation is the same computation as execution, on today's registry.
        let mutations =
            mutations_for(&s.kind, registry, now_ns).map_err(GovernanceError::Invalid)?;
        check(&mutations).map_err(GovernanceError::Invalid)?;
        let id = self.next_proposal_id;
        let mut ballots: BTreeMap<NeuronId, BallotBox> = registry
            .neurons
            .values()
            .map(|n| {
                (
                    n.id,
                    BallotBox {
                        voting_power: n.voting_power,
                        vote: None,
                    },
                )
            })
            .collect();
        if let Some(b) = ballots.get_mut(&s.neuron_id) {
            b.vote = Some(Vote::Yes);
        }
        let mut proposal = Proposal {
            id,
            proposer: s.neuron_id,
            nonce: s.nonce,
            kind: s.kind.clone(),
            created_ns: now_ns,
            deadline_ns: now_ns.saturating_add(self.voting_period_ns),
            ballots,
            status: ProposalStatus::Open,
            decided_ns: None,
            executed_registry_version: None,
            failure_reason: None,
        };
        proposal.decide_early(now_ns);
        self.proposals.insert(id, proposal);
        self.next_proposal_id += 1;
        Ok(id)
    }

    /// Records a verified vote (the caller checked that `verified`'s key is still the
    /// neuron's controller). Returns the proposal's status afterwards. Needs no registry
    /// state: the proposal's ballots say who may vote and with what power.
    pub fn vote(
        &mut self,
        now_ns: u64,
        verified: &VerifiedBallot,
    ) -> Result<ProposalStatus, GovernanceError> {
        let b = &verified.ballot;
        let p = self
            .proposals
            .get_mut(&b.proposal_id)
            .ok_or(GovernanceError::UnknownProposal(b.proposal_id))?;
        // Voting ends at the deadline, whether or not a tick has decided it yet.
        if p.status == ProposalStatus::Open && now_ns >= p.deadline_ns {
            p.decide_at_deadline(now_ns);
        }
        if p.status != ProposalStatus::Open {
            return Err(GovernanceError::NotOpen {
                id: p.id,
                status: p.status,
            });
        }
        let ballot = p
            .ballots
            .get_mut(&b.neuron_id)
            .ok_or(GovernanceError::NoBallot {
                neuron: b.neuron_id,
                proposal: p.id,
            })?;
        if ballot.vote.is_some() {
            return Err(GovernanceError::AlreadyVoted {
                neuron: b.neuron_id,
                proposal: p.id,
            });
        }
        ballot.vote = Some(b.vote);
        p.decide_early(now_ns);
        Ok(p.status)
    }

    /// Whether [`Self::process_deadlines`] would decide anything at `now_ns`: an open
    /// proposal whose deadline has passed.
    pub fn any_deadline_passed(&self, now_ns: u64) -> bool {
        self.proposals
            .values()
            .any(|p| p.status == ProposalStatus::Open && now_ns >= p.deadline_ns)
    }

    /// Decides open proposals whose deadline has passed, oldest first, at most `max` of
    /// them; returns how many it decided.
    pub fn process_deadlines(&mut self, now_ns: u64, max: usize) -> usize {
        let mut decided = 0;
        for p in self.proposals.values_mut() {
            if decided >= max {
                break;
            }
            if p.status == ProposalStatus::Open && now_ns >= p.deadline_ns {
                p.decide_at_deadline(now_ns);
                decided += 1;
            }
        }
        decided
    }

    /// Adopted proposals waiting for execution, oldest first.
    pub fn pending_execution(&self) -> Vec<ProposalId> {
        self.proposals
            .values()
            .filter(|p| p.status == ProposalStatus::Adopted)
            .map(|p| p.id)
            .collect()
    }

    /// Records the outcome of executing an adopted proposal.
    pub fn record_execution(&mut self, id: ProposalId, outcome: Result<RegistryVersion, String>) {
        if let Some(p) = self.proposals.get_mut(&id) {
            match outcome {
                Ok(v) => {
                    p.status = ProposalStatus::Executed;
                    p.executed_registry_version = Some(v);
                }
                Err(reason) => {
                    p.status = ProposalStatus::Failed;
                    p.failure_reason = Some(reason);
                }
            }
        }
    }
}

/// The registry batch a proposal executes, computed on `registry` (the latest state) at
/// time `at_ns` (Unix ns; the time of a recovery CUP). Fails with the reason when the
/// proposal makes no sense there.
pub fn mutations_for(
    kind: &ProposalKind,
    registry: &Snapshot,
    at_ns: u64,
) -> Result<Vec<Mutation>, String> {
    match kind {
        ProposalKind::ElectVersion {
            version,
            sha256_hex,
            urls,
        } => {
            if registry.versions.contains_key(version) {
                return Err(format!("version {version} is already elected"));
            }
            let record = ReplicaVersionRecord {
                version: version.clone(),
                release_package_sha256_hex: sha256_hex.clone(),
                release_package_urls: urls.clone(),
                recalled: false,
                extensions: Default::default(),
            };
            check_version(&record).map_err(|e| e.to_string())?;
            Ok(vec![Mutation::Insert {
                key: keys::replica_version(version),
                value: record.encode_value(),
            }])
        }
        ProposalKind::RetireVersion { versions } => {
            if versions.is_empty() {
                return Err("no version to retire".into());
            }
            let mut out = Vec::new();
            for v in versions {
                if !registry.versions.contains_key(v) {
                    return Err(format!("version {v} is not elected"));
                }
                if let Some(s) = registry.subnets.values().find(|s| &s.replica_version == v) {
                    return Err(format!(
                        "version {v} is in use by subnet {}: deploy another version there first",
                        s.subnet_id
                    ));
                }
                out.push(Mutation::Delete {
                    key: keys::replica_version(v),
                });
            }
            Ok(out)
        }
        ProposalKind::DeployVersion { subnet, version } => {
            let mut record = subnet_for(registry, subnet, version)?;
            if &record.replica_version == version {
                return Err(format!("subnet {subnet} already runs version {version}"));
            }
            record.replica_version = version.clone();
            Ok(vec![Mutation::Update {
                key: keys::subnet_record(subnet),
                value: record.encode_value(),
            }])
        }
        ProposalKind::UpdateSubnetConfig {
            subnet,
            halt_at_cup_height,
            is_halted,
            unit_delay_ms,
            initial_notary_delay_ms,
            dkg_interval_length,
        } => {
            let mut record = registry
                .subnets
                .get(subnet)
                .cloned()
                .ok_or(format!("subnet {subnet} does not exist"))?;
            let before = record.clone();
            if let Some(v) = halt_at_cup_height {
                record.halt_at_cup_height = *v;
            }
            if let Some(v) = is_halted {
                record.is_halted = *v;
            }
            if let Some(v) = unit_delay_ms {
                record.unit_delay_ms = *v;
            }
            if let Some(v) = initial_notary_delay_ms {
                record.initial_notary_delay_ms = *v;
            }
            if let Some(v) = dkg_interval_length {
                record.dkg_interval_length = *v;
            }
            if record == before {
                return Err(format!("the update changes nothing in subnet {subnet}"));
            }
            Ok(vec![Mutation::Update {
                key: keys::subnet_record(subnet),
                value: record.encode_value(),
            }])
        }
        ProposalKind::RecoverSubnet {
            subnet,
            version,
            height,
            state_hash,
        } => recover_subnet(registry, subnet, version, *height, *state_hash, at_ns),
        ProposalKind::RecallVersion { version } => {
            let mut record = registry
                .versions
                .get(version)
                .cloned()
                .ok_or(format!("version {version} is not elected"))?;
            if record.recalled {
                return Err(format!("version {version} is already recalled"));
            }
            record.recalled = true;
            Ok(vec![Mutation::Update {
                key: keys::replica_version(version),
                value: record.encode_value(),
            }])
        }
        ProposalKind::AddNodes { subnet, nodes } => {
            change_members(registry, subnet, nodes, Membership::Add)
        }
        ProposalKind::RemoveNodes { subnet, nodes } => {
            change_members(registry, subnet, nodes, Membership::Remove)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Membership {
    Add,
    Remove,
}

/// The most nodes one membership proposal names (a bound on the proposal and on the
/// resharing it starts).
pub const MAX_NODES_PER_MEMBERSHIP_CHANGE: usize = 40;

/// The subnet record with `nodes` added or removed; what the registry refuses is
/// refused here first, in words that name the node.
fn change_members(
    registry: &Snapshot,
    subnet: &SubnetId,
    nodes: &[NodeId],
    change: Membership,
) -> Result<Vec<Mutation>, String> {
    let mut record = registry
        .subnets
        .get(subnet)
        .cloned()
        .ok_or(format!("subnet {subnet} does not exist"))?;
    if nodes.is_empty() {
        return Err("no node named".into());
    }
    if nodes.len() > MAX_NODES_PER_MEMBERSHIP_CHANGE {
        return Err(format!(
            "{} nodes named; at most {MAX_NODES_PER_MEMBERSHIP_CHANGE} per proposal",
            nodes.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for node in nodes {
        if !seen.insert(node) {
            return Err(format!("node {node} is named twice"));
        }
        let is_member = record.members.contains(node);
        match change {
            Membership::Add => {
                let Some(n) = registry.nodes.get(node) else {
                    return Err(format!("node {node} is not registered (no node record)"));
                };
                if is_member {
                    return Err(format!(
                        "node {node} is already a member of subnet {subnet}"
                    ));
                }
                if let Some(other) = registry.subnets.values().find(|s| s.members.contains(node)) {
                    return Err(format!(
                        "node {node} is a member of subnet {}: remove it there first",
                        other.subnet_id
                    ));
                }
                if n.dealing_encryption_key.is_none() {
                    return Err(format!(
                        "node {node} has no dealing encryption key: the subnet could not reshare its key to it"
                    ));
                }
            }
            Membership::Remove => {
                if !is_member {
                    return Err(format!("node {node} is not a member of subnet {subnet}"));
                }
            }
        }
    }
    // The keys in the record stay the ones dealt to the committee before the first
    // change; the subnet's CUPs name whoever holds the reshared key from then on.
    if record.key_holders.is_none() {
        record.key_holders = Some(record.members.clone());
    }
    match change {
        Membership::Add => record.members.extend_from_slice(nodes),
        Membership::Remove => record.members.retain(|m| !nodes.contains(m)),
    }
    if record.members.is_empty() {
        return Err(format!(
            "removing every member would leave subnet {subnet} empty"
        ));
    }
    Ok(vec![Mutation::Update {
        key: keys::subnet_record(subnet),
        value: record.encode_value(),
    }])
}

/// The record of `subnet`, which is to run `version`: both must exist (elected).
fn subnet_for(
    registry: &Snapshot,
    subnet: &SubnetId,
    version: &ReplicaVersion,
) -> Result<crate::records::SubnetRecord, String> {
    let record = registry
        .subnets
        .get(subnet)
        .cloned()
        .ok_or(format!("subnet {subnet} does not exist"))?;
    match registry.versions.get(version) {
        None => Err(format!("version {version} is not elected: elect it first")),
        Some(v) if v.recalled => Err(format!(
            "version {version} is recalled: elect a release under another version id"
        )),
        Some(_) => Ok(record),
    }
}

/// The subnet's record names `version` and its CUP contents become a recovery at
/// `height`, in one batch (one registry version: the CUP built from it names both).
fn recover_subnet(
    registry: &Snapshot,
    subnet: &SubnetId,
    version: &ReplicaVersion,
    height: Height,
    state_hash: CryptoHash,
    at_ns: u64,
) -> Result<Vec<Mutation>, String> {
    let mut record = subnet_for(registry, subnet, version)?;
    // A registry CUP's committee is the one the record's keys were dealt to; after a
    // membership change the key is (or is being) reshared to another one.
    if record
        .key_holders
        .as_ref()
        .is_some_and(|h| h != &record.members)
    {
        return Err(format!(
            "subnet {subnet}'s members changed since its threshold keys were dealt: a recovery CUP would name the committee that held them then; not supported yet"
        ));
    }
    if height == Height::ZERO {
        return Err("a recovery CUP is above genesis: height must be at least 1".into());
    }
    // The registry knows the subnet's genesis or last recovery; signed CUPs above it are
    // known to the subnet's nodes (their `/status`), which the proposer reads.
    if let Some(c) = registry.cup_contents.get(subnet)
        && height < c.height
    {
        return Err(format!(
            "height {height} is below the subnet's {} CUP at {}: a recovery cannot go back past it",
            match c.kind {
                CupContentsKind::Genesis => "genesis",
                CupContentsKind::Recovery => "last recovery",
            },
            c.height
        ));
    }
    record.replica_version = version.clone();
    let contents = CupContentsRecord {
        kind: CupContentsKind::Recovery,
        height,
        time_ns: at_ns,
        state_hash,
        extensions: Default::default(),
    };
    Ok(vec![
        Mutation::Update {
            key: keys::subnet_record(subnet),
            value: record.encode_value(),
        },
        if registry.cup_contents.contains_key(subnet) {
            Mutation::Update {
                key: keys::cup_contents(subnet),
                value: contents.encode_value(),
            }
        } else {
            Mutation::Insert {
                key: keys::cup_contents(subnet),
                value: contents.encode_value(),
            }
        },
    ])
}
