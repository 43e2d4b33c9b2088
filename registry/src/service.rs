//! [`Registry`]: the store, the invariants and governance together, as the registry
//! server runs them.
//!
//! Every change goes through one path: compute the next state in memory, check it, then
//! commit the registry delta (if any) and the changed governance records in one atomic
//! store commit. A vote that adopts a proposal is committed first, then the proposal's
//! execution; if the process dies in between, [`Registry::open`] (or, past its bound,
//! the next [`Registry::tick`]) executes the adopted proposal on restart, so an
//! acknowledged vote is never lost and a proposal never runs twice.

use crate::{
    governance::{
        Governance, GovernanceError, MAX_DEADLINE_DECISIONS_PER_CALL, NeuronId, ProposalId,
        ProposalStatus, SignedBallot, SignedSubmission, VerifiedBallot, VerifiedSubmission,
        mutations_for,
    },
    invariants::{InvariantViolation, Snapshot},
    records::{NeuronRecord, RegistryRecord, keys},
    store::{AuxWrite, Mutation, RegistryStore, StoreError, VersionDelta},
};
use crypto::ed25519::Ed25519PublicKey;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};
use types::{NetworkId, RegistryVersion, codec};

pub(crate) const GOV_META: &str = "gov/meta";
const GOV_PROPOSAL_PREFIX: &str = "gov/proposal/";

/// The most adopted proposals executed in one call (a tick, a submission, a vote): each
/// is a whole-registry decode, a validation and a synced commit under the server's lock,
/// so a pile of them waits for the next ticks rather than stalling every request.
pub const MAX_EXECUTIONS_PER_CALL: usize = 8;

pub(crate) fn proposal_key(id: ProposalId) -> String {
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
    #[error("stored registry or governance state is corrupt: {0}")]
    Corrupt(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct GovMeta {
    pub(crate) voting_period_ns: u64,
    pub(crate) next_proposal_id: ProposalId,
}

/// Before the registry is installed: no proposal yet.
impl Default for GovMeta {
    fn default() -> Self {
        Self {
            voting_period_ns: crate::governance::DEFAULT_VOTING_PERIOD_NS,
            next_proposal_id: 1,
        }
    }
}

/// The registry with governance, over any store.
#[derive(Debug)]
pub struct Registry<S: RegistryStore> {
    store: S,
    governance: Governance,
    /// Whole-registry decodes so far: the expensive step a request must earn (see
    /// [`Registry::snapshot_decodes`]).
    snapshot_decodes: AtomicU64,
    /// The latest state decoded, with its version: reads between two commits share one
    /// decode (versions are immutable, so the version names the contents).
    latest: Mutex<Option<(RegistryVersion, Arc<Snapshot>)>>,
}

/// What a registry holds in memory between two uses of one store: governance as
/// decoded, and the latest snapshot. An NNS subnet's state opens its registry at every
/// block; starting [`Registry::open_warm`] from the previous block's [`Registry::into_warm`]
/// saves decoding every proposal again (their number only grows). Valid only for the
/// store exactly as that registry left it.
#[derive(Debug)]
pub struct Warm {
    governance: Governance,
    latest: Option<(RegistryVersion, Arc<Snapshot>)>,
}

impl<S: RegistryStore> Registry<S> {
    /// Loads governance state from the store and executes any adopted proposal that a
    /// crash left unexecuted.
    pub fn open(store: S) -> Result<Self, RegistryError> {
        let mut registry = Self::load(store)?;
        registry.execute_pending()?;
        Ok(registry)
    }

    /// [`Self::open`] without reading governance from the store: `warm` is what a
    /// registry over the same store, unchanged since, left ([`Self::into_warm`]).
    pub fn open_warm(store: S, warm: Warm) -> Result<Self, RegistryError> {
        let mut registry = Self {
            store,
            governance: warm.governance,
            snapshot_decodes: AtomicU64::new(0),
            latest: Mutex::new(warm.latest),
        };
        registry.execute_pending()?;
        Ok(registry)
    }

    /// What [`Self::open_warm`] needs to go on from here over the same store.
    pub fn into_warm(self) -> Warm {
        Warm {
            governance: self.governance,
            latest: self.latest.into_inner().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// A copy of a registry that another decides (a registry server following the NNS
    /// subnet): loaded as it is, executing nothing; it changes only by
    /// [`Self::store_mut`] (verified deltas) and [`Self::mirror_governance`].
    pub fn open_copy(store: S) -> Result<Self, RegistryError> {
        Self::load(store)
    }

    /// The store under a copy ([`Self::open_copy`]), to append verified deltas to.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Makes a copy's governance what its source certified: `proposals` (every one, ids
    /// from 1) and the next id, written in one commit (only the proposals that changed).
    pub fn mirror_governance(
        &mut self,
        proposals: Vec<crate::governance::Proposal>,
        next_proposal_id: ProposalId,
    ) -> Result<(), RegistryError> {
        self.mirror_governance_from(1, proposals, next_proposal_id)
    }

    /// [`Self::mirror_governance`] for the proposals from id `from` on: those below it
    /// are kept as they are (a copy reads again only what may still change,
    /// [`crate::governance::Governance::first_unsettled`]).
    pub fn mirror_governance_from(
        &mut self,
        from: ProposalId,
        proposals: Vec<crate::governance::Proposal>,
        next_proposal_id: ProposalId,
    ) -> Result<(), RegistryError> {
        let mut next = self.governance.clone();
        next.next_proposal_id = next_proposal_id;
        next.proposals.split_off(&from);
        next.proposals
            .extend(proposals.into_iter().map(|p| (p.id, p)));
        if next == self.governance {
            return Ok(());
        }
        self.commit_governance(next, None)
    }

    fn load(store: S) -> Result<Self, RegistryError> {
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
        Ok(Self {
            store,
            governance,
            snapshot_decodes: AtomicU64::new(0),
            latest: Mutex::new(None),
        })
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

    /// The latest state, decoded once per registry version.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, RegistryError> {
        let version = self.store.latest_version();
        // Only `&mut self` methods commit, and they hold this registry exclusively, so
        // the version cannot move between the check and the decode.
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, snapshot)) = latest.as_ref()
            && *v == version
        {
            return Ok(Arc::clone(snapshot));
        }
        let snapshot = Arc::new(self.decode(&self.store.latest_snapshot()?)?);
        *latest = Some((version, Arc::clone(&snapshot)));
        Ok(snapshot)
    }

    /// How many times the whole registry was decoded (for the latest state or a batch's
    /// result): the work a request costs beyond a key read. Served as a metric, and what
    /// tests count to show a refused request did not get this far.
    pub fn snapshot_decodes(&self) -> u64 {
        self.snapshot_decodes.load(Ordering::Relaxed)
    }

    fn decode(
        &self,
        state: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<Snapshot, RegistryError> {
        self.snapshot_decodes.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot::decode(state)?)
    }

    /// A neuron's controller key at the latest version: one record read, no snapshot.
    pub fn neuron_controller(&self, id: NeuronId) -> Result<Ed25519PublicKey, RegistryError> {
        let key = keys::neuron(id);
        let bytes = self
            .store
            .get(&key, self.latest_version())?
            .ok_or(GovernanceError::UnknownNeuron(id))?;
        let record = NeuronRecord::decode_value(&bytes)
            .map_err(|e| RegistryError::Corrupt(format!("record {key}: {e}")))?;
        Ok(record.controller)
    }

    /// The cheap checks of a submission, in order of cost: the network, the neuron (one
    /// record read), the signature. The server runs the same steps outside its lock.
    pub fn verify_submission(
        &self,
        network: &NetworkId,
        signed: &SignedSubmission,
    ) -> Result<VerifiedSubmission, RegistryError> {
        signed.check_network(network)?;
        let controller = self.neuron_controller(signed.submission.neuron_id)?;
        Ok(signed.verify(network, &controller)?)
    }

    /// The cheap checks of a ballot, as [`Registry::verify_submission`].
    pub fn verify_ballot(
        &self,
        network: &NetworkId,
        signed: &SignedBallot,
    ) -> Result<VerifiedBallot, RegistryError> {
        signed.check_network(network)?;
        let controller = self.neuron_controller(signed.ballot.neuron_id)?;
        Ok(signed.verify(network, &controller)?)
    }

    /// Refuses a verified request whose key is no longer its neuron's controller (it was
    /// verified outside the lock, against the key read then).
    fn check_controller(
        &self,
        neuron: NeuronId,
        verified_with: &Ed25519PublicKey,
    ) -> Result<(), RegistryError> {
        if &self.neuron_controller(neuron)? != verified_with {
            return Err(GovernanceError::BadSignature(neuron).into());
        }
        Ok(())
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
        self.decode(&state)?.check()?;
        Ok(delta)
    }

    /// Applies a batch outside governance (genesis tooling and tests).
    pub fn apply(&mut self, mutations: &[Mutation]) -> Result<RegistryVersion, RegistryError> {
        let delta = self.prepare(mutations)?;
        self.store.commit(Some(&delta), &[])?;
        Ok(delta.version)
    }

    /// Records a verified proposal (executing it if the proposer alone has a majority).
    pub fn submit(
        &mut self,
        now_ns: u64,
        verified: &VerifiedSubmission,
    ) -> Result<ProposalId, RegistryError> {
        self.check_controller(verified.submission().neuron_id, verified.controller())?;
        let snapshot = self.snapshot()?;
        let mut next = self.governance.clone();
        let check = |m: &[Mutation]| self.prepare(m).map(|_| ()).map_err(|e| e.to_string());
        let id = next.submit(&snapshot, now_ns, verified, &check)?;
        self.commit_governance(next, None)?;
        self.execute_pending()?;
        Ok(id)
    }

    /// Records a verified vote; returns the proposal's status once any execution is done.
    pub fn vote(
        &mut self,
        now_ns: u64,
        verified: &VerifiedBallot,
    ) -> Result<ProposalStatus, RegistryError> {
        self.check_controller(verified.ballot().neuron_id, verified.controller())?;
        let mut next = self.governance.clone();
        next.vote(now_ns, verified)?;
        self.commit_governance(next, None)?;
        self.execute_pending()?;
        let id = verified.ballot().proposal_id;
        Ok(self
            .governance
            .proposals
            .get(&id)
            .map(|p| p.status)
            .unwrap_or(ProposalStatus::Open))
    }

    /// Decides proposals whose deadline passed and executes adopted ones, each up to its
    /// bound ([`MAX_DEADLINE_DECISIONS_PER_CALL`], [`MAX_EXECUTIONS_PER_CALL`]); what is
    /// left is done by the next ticks.
    pub fn tick(&mut self, now_ns: u64) -> Result<(), RegistryError> {
        // Most ticks decide nothing (an NNS subnet ticks at every block): no copy then.
        if self.governance.any_deadline_passed(now_ns) {
            let mut next = self.governance.clone();
            if next.process_deadlines(now_ns, MAX_DEADLINE_DECISIONS_PER_CALL) > 0 {
                self.commit_governance(next, None)?;
            }
        }
        self.execute_pending()
    }

    /// Executes adopted proposals one by one, oldest first, at most
    /// [`MAX_EXECUTIONS_PER_CALL`]: each execution (the registry delta and the proposal's
    /// new status) is one atomic commit.
    fn execute_pending(&mut self) -> Result<(), RegistryError> {
        let pending = self.governance.pending_execution();
        for id in pending.into_iter().take(MAX_EXECUTIONS_PER_CALL) {
            let Some(proposal) = self.governance.proposals.get(&id) else {
                continue;
            };
            let snapshot = self.snapshot()?;
            // The adoption's time: execution is a function of the proposal and the registry.
            let at_ns = proposal.decided_ns.unwrap_or(proposal.created_ns);
            let outcome = mutations_for(&proposal.kind, &snapshot, at_ns)
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
