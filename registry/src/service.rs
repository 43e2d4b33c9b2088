//! [`Registry`]: the store, the invariants and governance together, as the registry
//! server runs them.
//!
//! Every change goes through one path: compute the next state in memory, check it, then
//! commit the registry delta (if any) and the changed governance records in one atomic
//! store commit. A vote that adopts a proposal is committed first, then the proposal's
//! execution; if the process dies in between, [`Registry::open`] executes the adopted
//! proposal on restart, so an acknowledged vote is never lost and a proposal never runs
//! twice.

use crate::{
    governance::{
        Governance, GovernanceError, ProposalId, ProposalStatus, SignedBallot, SignedSubmission,
        mutations_for,
    },
    invariants::{InvariantViolation, Snapshot},
    store::{AuxWrite, Mutation, RegistryStore, StoreError, VersionDelta},
};
use types::{RegistryVersion, codec};

const GOV_META: &str = "gov/meta";
const GOV_PROPOSAL_PREFIX: &str = "gov/proposal/";

fn proposal_key(id: ProposalId) -> String {
    format!("{GOV_PROPOSAL_PREFIX}{id:020}")
}

/// Why the registry refused a request. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("refused: the change would break a registry invariant: {0}")]
    Invariant(#[from] InvariantViolation),
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    #[error("the registry is already initialized (at version {0})")]
    AlreadyInitialized(RegistryVersion),
    #[error("stored governance state is corrupt: {0}")]
    Corrupt(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct GovMeta {
    voting_period_ns: u64,
    next_proposal_id: ProposalId,
}

/// The registry with governance, over any store.
#[derive(Debug)]
pub struct Registry<S: RegistryStore> {
    store: S,
    governance: Governance,
}

impl<S: RegistryStore> Registry<S> {
    /// Loads governance state from the store and executes any adopted proposal that a
    /// crash left unexecuted.
    pub fn open(store: S) -> Result<Self, RegistryError> {
        let corrupt = |e: codec::CodecError| RegistryError::Corrupt(e.to_string());
        let mut governance = match store.aux_get(GOV_META)? {
            None => Governance::new(crate::governance::DEFAULT_VOTING_PERIOD_NS),
            Some(bytes) => {
                let meta: GovMeta = codec::decode(&bytes, 64).map_err(corrupt)?;
                let mut g = Governance::new(meta.voting_period_ns);
                g.next_proposal_id = meta.next_proposal_id;
                g
            }
        };
        for (_, bytes) in store.aux_scan(GOV_PROPOSAL_PREFIX)? {
            let p: crate::governance::Proposal =
                codec::decode(&bytes, codec::MAX_ENCODED_BYTES).map_err(corrupt)?;
            governance.proposals.insert(p.id, p);
        }
        let mut registry = Self { store, governance };
        registry.execute_pending()?;
        Ok(registry)
    }

    /// Writes the genesis contents as version 1 of an empty registry.
    pub fn init(
        &mut self,
        genesis: &[Mutation],
        voting_period_ns: u64,
    ) -> Result<RegistryVersion, RegistryError> {
        let latest = self.store.latest_version();
        if latest != RegistryVersion::ZERO || self.store.aux_get(GOV_META)?.is_some() {
            return Err(RegistryError::AlreadyInitialized(latest));
        }
        let delta = self.prepare(genesis)?;
        let governance = Governance::new(voting_period_ns);
        let aux = vec![(GOV_META.to_string(), Some(meta_bytes(&governance)))];
        self.store.commit(Some(&delta), &aux)?;
        self.governance = governance;
        Ok(delta.version)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn governance(&self) -> &Governance {
        &self.governance
    }

    pub fn latest_version(&self) -> RegistryVersion {
        self.store.latest_version()
    }

    /// The latest state, decoded.
    pub fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        Ok(Snapshot::decode(&self.store.latest_snapshot()?)?)
    }

    /// The delta a batch would commit, after its preconditions and every invariant on
    /// the resulting state passed. Writes nothing.
    pub fn prepare(&self, mutations: &[Mutation]) -> Result<VersionDelta, RegistryError> {
        let delta = self.store.prepare(mutations)?;
        let mut state = self.store.latest_snapshot()?;
        for c in &delta.changes {
            match &c.value {
                Some(v) => state.insert(c.key.clone(), v.clone()),
                None => state.remove(&c.key),
            };
        }
        Snapshot::decode(&state)?.check()?;
        Ok(delta)
    }

    /// Applies a batch outside governance (genesis tooling and tests).
    pub fn apply(&mut self, mutations: &[Mutation]) -> Result<RegistryVersion, RegistryError> {
        let delta = self.prepare(mutations)?;
        self.store.commit(Some(&delta), &[])?;
        Ok(delta.version)
    }

    /// Records a signed proposal (executing it if the proposer alone has a majority).
    pub fn submit(
        &mut self,
        now_ns: u64,
        signed: &SignedSubmission,
    ) -> Result<ProposalId, RegistryError> {
        let snapshot = self.snapshot()?;
        let mut next = self.governance.clone();
        let check = |m: &[Mutation]| self.prepare(m).map(|_| ()).map_err(|e| e.to_string());
        let id = next.submit(&snapshot, now_ns, signed, &check)?;
        self.commit_governance(next, None)?;
        self.execute_pending()?;
        Ok(id)
    }

    /// Records a signed vote; returns the proposal's status once any execution is done.
    pub fn vote(
        &mut self,
        now_ns: u64,
        signed: &SignedBallot,
    ) -> Result<ProposalStatus, RegistryError> {
        let snapshot = self.snapshot()?;
        let mut next = self.governance.clone();
        next.vote(&snapshot, now_ns, signed)?;
        self.commit_governance(next, None)?;
        self.execute_pending()?;
        let id = signed.ballot.proposal_id;
        Ok(self
            .governance
            .proposals
            .get(&id)
            .map(|p| p.status)
            .unwrap_or(ProposalStatus::Open))
    }

    /// Decides proposals whose deadline passed, and executes the adopted ones.
    pub fn tick(&mut self, now_ns: u64) -> Result<(), RegistryError> {
        let mut next = self.governance.clone();
        next.process_deadlines(now_ns);
        if next != self.governance {
            self.commit_governance(next, None)?;
        }
        self.execute_pending()
    }

    /// Executes adopted proposals one by one: each execution (the registry delta and the
    /// proposal's new status) is one atomic commit.
    fn execute_pending(&mut self) -> Result<(), RegistryError> {
        for id in self.governance.pending_execution() {
            let Some(proposal) = self.governance.proposals.get(&id) else {
                continue;
            };
            let snapshot = self.snapshot()?;
            let outcome = mutations_for(&proposal.kind, &snapshot)
                .and_then(|m| self.prepare(&m).map_err(|e| e.to_string()));
            let mut next = self.governance.clone();
            match outcome {
                Ok(delta) => {
                    next.record_execution(id, Ok(delta.version));
                    self.commit_governance(next, Some(&delta))?;
                }
                Err(reason) => {
                    next.record_execution(id, Err(reason));
                    self.commit_governance(next, None)?;
                }
            }
        }
        Ok(())
    }

    /// Commits `next` (only the proposals that changed) with an optional delta.
    fn commit_governance(
        &mut self,
        next: Governance,
        delta: Option<&VersionDelta>,
    ) -> Result<(), RegistryError> {
        let mut aux: Vec<AuxWrite> = next
            .proposals
            .iter()
            .filter(|(id, p)| self.governance.proposals.get(id) != Some(p))
            .map(|(id, p)| (proposal_key(*id), Some(codec::encode(p))))
            .collect();
        aux.push((GOV_META.to_string(), Some(meta_bytes(&next))));
        self.store.commit(delta, &aux)?;
        self.governance = next;
        Ok(())
    }
}

fn meta_bytes(g: &Governance) -> Vec<u8> {
    codec::encode(&GovMeta {
        voting_period_ns: g.voting_period_ns,
        next_proposal_id: g.next_proposal_id,
    })
}
