//! The NNS subnet's execution (issue 19): governance calls arrive as ingress
//! ([`Operation::Propose`], [`Operation::Vote`]) and execute in block order against the
//! registry this state keeps ([`super::registry_kv`]). Governance's clock is the block's
//! time: a proposal's deadline passes at the first block whose time is past it, on every
//! replica alike, whatever their clocks say.
//!
//! Each call's outcome is the hashed entry `n/reply/<message id>` ([`GovernanceReply`]),
//! so a client reads it under the subnet's certification like any entry; it goes with the
//! message's replay record when that expires (a client has until the message's expiry,
//! at most five minutes, to read it; the proposal itself stays in governance's state).
//!
//! A state keeps a registry once [`ReplicatedState::execute_installing_registry`] wrote
//! the genesis registry into it (an NNS subnet's first block); an application subnet's
//! state never does, and skips governance calls like a method it does not have.

use super::{
    BlockUndo, CertifiedRead, Executed, ReplicatedState, StateError, TreeUndo, Writes, index,
    prefixed, registry_kv::BlockKv, tree::Witness,
};
use crate::ingress::{MAX_VALUE_BYTES, Operation, SignedIngress, VerifiedSignatures};
use registry::{
    Registry, RegistryError,
    governance::{GovernanceReply, SignedBallot, SignedSubmission},
    store::{
        KvStore, Mutation, RegistryStore, StoreError, VersionDelta,
        kv::{LATEST, chain_key},
    },
};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use types::{CryptoHash, Height, NetworkId, RegistryVersion, codec};

/// Where each governance call's reply is kept, by message id.
pub const REPLY_PREFIX: &[u8] = b"n/reply/";
/// The longest refusal reason a reply keeps (a reason quoting a large record is cut).
pub const MAX_REASON_BYTES: usize = 1024;
/// The most bytes a stored reply decodes from.
pub const MAX_REPLY_BYTES: usize = MAX_REASON_BYTES + 64;

/// The entry key of the reply to message `id`.
pub fn reply_key(id: &CryptoHash) -> Vec<u8> {
    prefixed(REPLY_PREFIX, &id.0)
}

/// Whether a registry error is the request's fault (an outcome to reply with) rather than
/// the state's (storage failing or corrupt: the block is abandoned, as for any write).
fn refused(e: &RegistryError) -> bool {
    !matches!(
        e,
        RegistryError::Store(StoreError::Storage(_) | StoreError::Corrupt(_))
            | RegistryError::Corrupt(_)
    )
}

fn abandon(e: RegistryError) -> StateError {
    match e {
        RegistryError::Store(s) => StateError::Registry(s),
        other => StateError::Corrupt(format!("the registry in the state: {other}")),
    }
}

fn cut(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut at = MAX_REASON_BYTES;
        while !reason.is_char_boundary(at) {
            at -= 1;
        }
        reason.truncate(at);
    }
    reason
}

/// Executes a block's governance calls in order, then moves governance's clock to the
/// block's time (deciding proposals whose deadline passed and executing adopted ones),
/// and writes each call's reply. `db` must hold a registry ([`keeps_registry`]); `warm`,
/// if given, is what the previous block's registry left over this same state. Returns
/// what this block's registry leaves for the next one.
pub(super) fn execute_calls(
    db: &DB,
    w: &mut Writes,
    time_ns: u64,
    network: &NetworkId,
    calls: &[(CryptoHash, &Operation)],
    warm: Option<registry::Warm>,
) -> Result<registry::Warm, StateError> {
    let mut replies = Vec::with_capacity(calls.len());
    let warm = {
        let store = KvStore::open(BlockKv::new(db, w)).map_err(StateError::Registry)?;
        let mut registry = match warm {
            Some(warm) => Registry::open_warm(store, warm),
            None => Registry::open(store),
        }
        .map_err(abandon)?;
        for (id, op) in calls {
            let outcome = match op {
                Operation::Propose { submission } => {
                    match codec::decode::<SignedSubmission>(submission, MAX_VALUE_BYTES) {
                        Err(e) => Err(format!("malformed submission: {e}")),
                        Ok(submission) => Ok(registry
                            .verify_submission(network, &submission)
                            .and_then(|v| registry.submit(time_ns, &v))
                            .map(|proposal_id| GovernanceReply::Proposed { proposal_id })),
                    }
                }
                Operation::Vote { ballot } => {
                    match codec::decode::<SignedBallot>(ballot, MAX_VALUE_BYTES) {
                        Err(e) => Err(format!("malformed ballot: {e}")),
                        Ok(ballot) => Ok(registry
                            .verify_ballot(network, &ballot)
                            .and_then(|v| registry.vote(time_ns, &v))
                            .map(|status| GovernanceReply::Voted {
                                proposal_id: ballot.ballot.proposal_id,
                                status,
                            })),
                    }
                }
                _ => continue,
            };
            let reply = match outcome {
                Err(reason) => GovernanceReply::Refused { reason },
                Ok(Ok(r)) => r,
                Ok(Err(e)) if refused(&e) => GovernanceReply::Refused {
                    reason: cut(e.to_string()),
                },
                Ok(Err(e)) => return Err(abandon(e)),
            };
            replies.push((reply_key(id), codec::encode(&reply)));
        }
        registry.tick(time_ns).map_err(abandon)?;
        registry.into_warm()
    };
    for (k, v) in replies {
        w.write(k, Some(v));
    }
    Ok(warm)
}

/// Whether the database holds a registry (the state of an NNS subnet).
pub(super) fn keeps_registry(db: &DB) -> Result<bool, StateError> {
    Ok(db.get(LATEST)?.is_some())
}

/// What an NNS subnet's first block installs: the genesis registry's contents (its
/// version 1) and governance's voting period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryGenesis {
    pub mutations: Vec<Mutation>,
    pub voting_period_ns: u64,
}

/// Writes the genesis registry into a block's writes. Refused, with nothing written,
/// on a state that keeps a registry already or for a genesis the registry's invariants
/// reject.
pub(super) fn install(
    db: &DB,
    w: &mut Writes,
    genesis: &RegistryGenesis,
) -> Result<(), StateError> {
    let store = KvStore::open(BlockKv::new(db, w)).map_err(StateError::Registry)?;
    let mut registry = Registry::open(store).map_err(abandon)?;
    registry
        .init(&genesis.mutations, genesis.voting_period_ns)
        .map_err(StateError::RegistryRefused)?;
    Ok(())
}

/// The registry as of some height, for a certified page of its changes: the latest
/// version with its witness, the deltas after a version, and the chain hash after the
/// last of them with its witness (both witnesses lead to `root`).
#[derive(Debug, Clone)]
pub struct RegistryRead {
    pub latest: RegistryVersion,
    pub latest_witness: Witness,
    pub deltas: Vec<VersionDelta>,
    /// The chain hash after the last delta, and its witness (`None`: no deltas).
    pub head: Option<(CryptoHash, Witness)>,
    pub root: CryptoHash,
}

impl ReplicatedState {
    /// Any hashed entry's stored value and witness as of the height before the blocks
    /// whose undos are `later` (oldest first; empty: the executed height). Only the
    /// registry's entries (and user values, [`Self::read_at`]) are kept in undos: for
    /// other entries, a later block's write shows through.
    pub fn entry_at(&self, key: &[u8], later: &[&BlockUndo]) -> Result<CertifiedRead, StateError> {
        let stored = match later.iter().find_map(|u| u.entries.get(key)) {
            Some(v) => v.clone(),
            None => self.db.get(key)?,
        };
        let trees: Vec<&TreeUndo> = later.iter().map(|u| &u.tree).collect();
        let (witness, root) = index::witness_at(&self.db, &self.top, key, &trees)?;
        Ok(CertifiedRead {
            stored,
            witness,
            root,
        })
    }

    /// The registry's changes after `since` as of the height before `later` (see
    /// [`Self::entry_at`]): at most `max_versions` deltas and, past the first, at most
    /// `max_bytes` of them encoded.
    pub fn registry_read(
        &self,
        since: RegistryVersion,
        max_versions: usize,
        max_bytes: usize,
        later: &[&BlockUndo],
    ) -> Result<RegistryRead, StateError> {
        let corrupt = |what: String| StateError::Corrupt(format!("the registry: {what}"));
        let latest_read = self.entry_at(LATEST, later)?;
        let latest = match &latest_read.stored {
            None => RegistryVersion::ZERO,
            Some(b) => RegistryVersion::new(u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| corrupt("r/latest is not 8 bytes".into()))?,
            )),
        };
        let available = latest.get().saturating_sub(since.get());
        let wanted = usize::try_from(available)
            .unwrap_or(usize::MAX)
            .min(max_versions);
        let all = self.registry_view(|s| s.changes_since(since, wanted))?;
        let mut deltas = Vec::with_capacity(all.len());
        let mut bytes = 0;
        for d in all {
            bytes += codec::encode(&d).len();
            if !deltas.is_empty() && bytes > max_bytes {
                break;
            }
            deltas.push(d);
        }
        let head = match deltas.last() {
            None => None,
            Some(d) => {
                let read = self.entry_at(&chain_key(d.version), later)?;
                let hash = read
                    .stored
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| corrupt(format!("no chain hash at version {}", d.version)))?;
                Some((CryptoHash(hash), read.witness))
            }
        };
        Ok(RegistryRead {
            latest,
            latest_witness: latest_read.witness,
            deltas,
            head,
            root: latest_read.root,
        })
    }

    /// Whether this state keeps the registry and executes governance calls.
    pub fn keeps_registry(&self) -> Result<bool, StateError> {
        keeps_registry(&self.db)
    }

    /// An NNS subnet's first block (the state is empty at genesis, as every subnet's, so
    /// its genesis CUP is like any other's): installs the genesis registry, hashed like
    /// every entry, then executes the block's payload like [`Self::execute_with`]. Every
    /// NNS replica installing the same genesis holds the same state. On an error nothing
    /// changed.
    pub fn execute_installing_registry(
        &mut self,
        height: Height,
        time_ns: u64,
        network: &NetworkId,
        payload: &[SignedIngress],
        verified: &mut VerifiedSignatures,
        genesis: &RegistryGenesis,
    ) -> Result<Executed, StateError> {
        self.execute_block(height, time_ns, network, payload, verified, Some(genesis))
    }

    /// The reply to governance call `id`, as of the executed height (`None`: not executed,
    /// or its reply expired with it).
    pub fn governance_reply(&self, id: &CryptoHash) -> Result<Option<GovernanceReply>, StateError> {
        self.db
            .get(reply_key(id))?
            .map(|b| {
                codec::decode(&b, MAX_REPLY_BYTES)
                    .map_err(|e| StateError::Corrupt(format!("governance reply: {e}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::{Ingress, SignedIngress};
    use crypto::ed25519::Ed25519KeyPair;
    use rand::SeedableRng;
    use registry::{
        genesis::{GeneratedNetwork, NetworkParams, generate_network},
        governance::{Ballot, ProposalId, ProposalKind, ProposalStatus, Submission, Vote},
        store::RegistryStore,
    };
    use types::ReplicaVersion;

    const NET: NetworkId = NetworkId([7; 32]);
    const SECOND: u64 = 1_000_000_000;
    const VOTING_PERIOD_NS: u64 = 3600 * SECOND;
    /// Block time of the first block: governance's clock starts here, not at the host's.
    const T0: u64 = 1_000 * SECOND;

    fn network() -> GeneratedNetwork {
        let params = NetworkParams {
            nodes: 4,
            neurons: 3,
            dkg_interval_length: 9,
            unit_delay_ms: 300,
            initial_notary_delay_ms: 100,
            base_port: 20000,
            replica_version: ReplicaVersion::new("1.0.0").unwrap(),
            package_sha256: "a".repeat(64),
            package_urls: vec!["http://127.0.0.1:1/one.tar.gz".into()],
            genesis_time_ns: 1_000,
        };
        generate_network(&params, &mut rand_chacha::ChaCha20Rng::seed_from_u64(7)).unwrap()
    }

    fn genesis(net: &GeneratedNetwork) -> RegistryGenesis {
        RegistryGenesis {
            mutations: net.genesis.mutations(),
            voting_period_ns: VOTING_PERIOD_NS,
        }
    }

    /// An NNS state after its first block (at `T0 - 1 s`, empty).
    fn nns_state(dir: &std::path::Path, net: &GeneratedNetwork) -> ReplicatedState {
        let mut state = ReplicatedState::open(dir).unwrap();
        let mut verified = VerifiedSignatures::with_capacity(1);
        let g = genesis(net);
        state
            .execute_installing_registry(Height::new(1), T0 - SECOND, &NET, &[], &mut verified, &g)
            .unwrap();
        assert_eq!(latest(&state), RegistryVersion::new(1));
        state
    }

    fn call(
        key: &Ed25519KeyPair,
        nonce: u64,
        expiry_ns: u64,
        operation: Operation,
    ) -> SignedIngress {
        let ingress = Ingress {
            network: NET,
            sender: key.public_key(),
            nonce,
            expiry_ns,
            operation,
        };
        SignedIngress::sign(ingress, key)
    }

    fn propose(
        net: &GeneratedNetwork,
        neuron: usize,
        nonce: u64,
        at: u64,
        kind: ProposalKind,
    ) -> SignedIngress {
        let submission = Submission {
            network: NET,
            neuron_id: neuron as u64,
            nonce,
            kind,
        };
        let key = &net.neuron_keys[neuron];
        let submission = codec::encode(&SignedSubmission::sign(submission, key));
        call(
            key,
            nonce,
            at + 60 * SECOND,
            Operation::Propose { submission },
        )
    }

    fn vote(
        net: &GeneratedNetwork,
        neuron: usize,
        proposal_id: ProposalId,
        at: u64,
    ) -> SignedIngress {
        let ballot = Ballot {
            network: NET,
            proposal_id,
            neuron_id: neuron as u64,
            vote: Vote::Yes,
        };
        let key = &net.neuron_keys[neuron];
        let ballot = codec::encode(&SignedBallot::sign(ballot, key));
        call(
            key,
            1_000 + proposal_id,
            at + 60 * SECOND,
            Operation::Vote { ballot },
        )
    }

    fn elect(version: &str) -> ProposalKind {
        ProposalKind::ElectVersion {
            version: ReplicaVersion::new(version).unwrap(),
            sha256_hex: "b".repeat(64),
            urls: vec!["https://example.org/two.tar.zst".into()],
        }
    }

    fn latest(state: &ReplicatedState) -> RegistryVersion {
        state.registry_view(|s| Ok(s.latest_version())).unwrap()
    }

    fn reply(state: &ReplicatedState, m: &SignedIngress) -> Option<GovernanceReply> {
        state.governance_reply(&m.id()).unwrap()
    }

    #[test]
    fn governance_calls_execute_in_block_order_with_the_block_time_as_clock() {
        let net = network();
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut states: Vec<ReplicatedState> =
            dirs.iter().map(|d| nns_state(d.path(), &net)).collect();
        assert_eq!(states[0].height(), Height::new(1));
        assert_eq!(states[0].state_hash(), states[1].state_hash());
        assert!(states[0].keeps_registry().unwrap());

        let elect_2 = propose(&net, 0, 1, T0, elect("2.0.0"));
        let elect_3 = propose(&net, 1, 2, T0, elect("3.0.0"));
        let unknown = vote(&net, 2, 99, T0);
        // Height 2: two proposals and a vote on a proposal that does not exist.
        // Height 3: a second neuron's vote adopts (and executes) the first.
        // Height 4: a second before the second's deadline (by the block's time): open.
        //   Every call's message has expired by then, and its reply with it.
        // Height 5: past the deadline, the second is decided by the votes cast (one yes
        //   of three, no no): adopted and executed.
        let blocks = [
            (T0, vec![elect_2.clone(), elect_3.clone(), unknown.clone()]),
            (T0 + SECOND, vec![vote(&net, 1, 1, T0 + SECOND)]),
            (T0 + VOTING_PERIOD_NS - SECOND, vec![]),
            (T0 + VOTING_PERIOD_NS + 2 * SECOND, vec![]),
        ];
        let statuses = |state: &ReplicatedState| {
            let proposals = state
                .registry_view(|s| s.aux_scan("gov/proposal/"))
                .unwrap();
            proposals
                .iter()
                .map(|(_, b)| {
                    codec::decode::<registry::governance::Proposal>(b, 1 << 20)
                        .unwrap()
                        .status
                })
                .collect::<Vec<_>>()
        };
        let mut executed = Vec::new();
        for state in &mut states {
            let mut h = Height::new(1);
            for (time, payload) in &blocks {
                h = h.increment();
                let r = state.execute(h, *time, &NET, payload).unwrap();
                executed.push(r.executed.len());
                assert_eq!(state.recompute_hash().unwrap(), state.state_hash());
                match h.get() {
                    2 => {
                        assert_eq!(
                            reply(state, &elect_2),
                            Some(GovernanceReply::Proposed { proposal_id: 1 })
                        );
                        assert_eq!(
                            reply(state, &elect_3),
                            Some(GovernanceReply::Proposed { proposal_id: 2 })
                        );
                        let Some(GovernanceReply::Refused { reason }) = reply(state, &unknown)
                        else {
                            panic!("a vote on no proposal is refused");
                        };
                        assert!(reason.contains("proposal 99 does not exist"), "{reason}");
                        assert_eq!(latest(state), RegistryVersion::new(1));
                    }
                    3 => {
                        assert_eq!(latest(state), RegistryVersion::new(2), "adopted, executed");
                        assert_eq!(
                            statuses(state),
                            [ProposalStatus::Executed, ProposalStatus::Open]
                        );
                    }
                    4 => {
                        assert_eq!(statuses(state)[1], ProposalStatus::Open);
                        assert_eq!(reply(state, &elect_2), None, "expired with its message");
                        assert_eq!(reply(state, &unknown), None);
                    }
                    _ => {
                        assert_eq!(
                            statuses(state),
                            [ProposalStatus::Executed, ProposalStatus::Executed]
                        );
                        assert_eq!(latest(state), RegistryVersion::new(3));
                    }
                }
            }
        }
        assert_eq!(
            executed,
            [3, 1, 0, 0, 3, 1, 0, 0],
            "a refused call still executes (its reply says no)"
        );
        assert_eq!(
            states[0].state_hash(),
            states[1].state_hash(),
            "deterministic"
        );
    }

    #[test]
    fn a_registry_kept_warm_between_blocks_executes_as_one_read_from_the_state() {
        let net = network();
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut warm = nns_state(dirs[0].path(), &net);
        let mut cold = nns_state(dirs[1].path(), &net);
        // Proposals, votes on them in later blocks (which need the earlier blocks'
        // governance), an adoption that executes, and deadlines that pass.
        let blocks = [
            (T0, vec![propose(&net, 0, 1, T0, elect("2.0.0"))]),
            (
                T0 + SECOND,
                vec![
                    vote(&net, 1, 1, T0 + SECOND),
                    propose(&net, 1, 2, T0 + SECOND, elect("3.0.0")),
                ],
            ),
            (T0 + 2 * SECOND, vec![]),
            (
                T0 + 3 * SECOND,
                vec![
                    vote(&net, 2, 2, T0 + 3 * SECOND),
                    propose(&net, 2, 3, T0 + 3 * SECOND, elect("4.0.0")),
                ],
            ),
            (T0 + VOTING_PERIOD_NS + 4 * SECOND, vec![]),
            (
                T0 + VOTING_PERIOD_NS + 5 * SECOND,
                vec![vote(&net, 0, 3, T0 + VOTING_PERIOD_NS + 5 * SECOND)],
            ),
        ];
        let mut h = Height::new(1);
        for (time, payload) in &blocks {
            h = h.increment();
            // Reopened before every block: its registry reads governance from the state.
            drop(cold);
            cold = ReplicatedState::open(dirs[1].path()).unwrap();
            assert!(cold.registry_warm.is_none());
            let a = warm.execute(h, *time, &NET, payload).unwrap();
            let b = cold.execute(h, *time, &NET, payload).unwrap();
            assert!(
                warm.registry_warm.as_ref().is_some_and(|(at, _)| *at == h),
                "the registry is kept warm for the next block"
            );
            assert_eq!(a.executed, b.executed, "height {h}");
            assert_eq!(warm.state_hash(), cold.state_hash(), "height {h}");
            for m in payload {
                assert_eq!(reply(&warm, m), reply(&cold, m), "height {h}");
            }
        }
        // Every call was taken (none refused for want of a proposal the warm registry
        // forgot), and the three elections were adopted and executed.
        assert_eq!(latest(&warm), RegistryVersion::new(4));
        assert_eq!(latest(&cold), RegistryVersion::new(4));
    }

    #[test]
    fn a_registry_read_at_an_earlier_height_sees_that_height_through_the_undos() {
        let net = network();
        let dir = tempfile::tempdir().unwrap();
        let mut state = nns_state(dir.path(), &net);
        state
            .execute(
                Height::new(2),
                T0,
                &NET,
                &[propose(&net, 0, 1, T0, elect("2.0.0"))],
            )
            .unwrap();
        let root_2 = state.root();
        // Height 3 adopts the proposal: version 2 appears, r/latest changes.
        let r = state
            .execute(
                Height::new(3),
                T0 + SECOND,
                &NET,
                &[vote(&net, 1, 1, T0 + SECOND)],
            )
            .unwrap();
        assert_eq!(latest(&state), RegistryVersion::new(2));
        let now = state
            .registry_read(RegistryVersion::ZERO, 10, 1 << 20, &[])
            .unwrap();
        assert_eq!(
            (now.latest, now.deltas.len(), now.root),
            (RegistryVersion::new(2), 2, state.root())
        );
        let then = state
            .registry_read(RegistryVersion::ZERO, 10, 1 << 20, &[&r.undo])
            .unwrap();
        assert_eq!(then.latest, RegistryVersion::new(1));
        assert_eq!(then.deltas.len(), 1, "version 2 did not exist at height 2");
        assert_eq!(then.root, root_2);
        let (head, witness) = then.head.unwrap();
        let value_hash = crate::state::tree::value_hash(state.schema(), &head.0);
        assert_eq!(
            witness.root(&chain_key(RegistryVersion::new(1)), Some(&value_hash)),
            Ok(root_2)
        );
        // The page's byte bound keeps at least one delta.
        let small = state
            .registry_read(RegistryVersion::ZERO, 10, 1, &[])
            .unwrap();
        assert_eq!(small.deltas.len(), 1);
    }

    #[test]
    fn an_application_subnet_skips_governance_calls() {
        let net = network();
        let dir = tempfile::tempdir().unwrap();
        let mut state = ReplicatedState::open(dir.path()).unwrap();
        assert!(!state.keeps_registry().unwrap());
        let m = propose(&net, 0, 1, T0, elect("2.0.0"));
        let r = state
            .execute(Height::new(1), T0, &NET, std::slice::from_ref(&m))
            .unwrap();
        assert!(r.executed.is_empty());
        assert_eq!(r.skipped, 1);
        assert!(
            !state.has_executed(&m.id()).unwrap(),
            "a skipped call leaves no replay record"
        );
        assert_eq!(reply(&state, &m), None);
        assert!(!state.keeps_registry().unwrap());
    }

    #[test]
    fn the_genesis_registry_goes_in_once_and_only_if_valid() {
        let net = network();
        let dir = tempfile::tempdir().unwrap();
        let mut state = nns_state(dir.path(), &net);
        let hash = state.state_hash();
        let mut verified = VerifiedSignatures::with_capacity(1);
        let again = state.execute_installing_registry(
            Height::new(2),
            T0,
            &NET,
            &[],
            &mut verified,
            &genesis(&net),
        );
        assert!(
            matches!(
                again,
                Err(StateError::RegistryRefused(
                    RegistryError::AlreadyInitialized(_)
                ))
            ),
            "{again:?}"
        );
        assert_eq!((state.height(), state.state_hash()), (Height::new(1), hash));
        // A genesis the invariants reject writes nothing, and the block does not happen.
        let other = tempfile::tempdir().unwrap();
        let mut empty = ReplicatedState::open(other.path()).unwrap();
        let empty_hash = empty.state_hash();
        let mut bad = genesis(&net);
        bad.mutations
            .retain(|m| !m.key().starts_with("subnet_record_"));
        let r =
            empty.execute_installing_registry(Height::new(1), T0, &NET, &[], &mut verified, &bad);
        assert!(matches!(r, Err(StateError::RegistryRefused(_))), "{r:?}");
        assert_eq!(
            (empty.height(), empty.state_hash()),
            (Height::new(0), empty_hash)
        );
        assert!(!empty.keeps_registry().unwrap());
        // Two replicas installing the same genesis agree; reopened, it is still there.
        let third = tempfile::tempdir().unwrap();
        assert_eq!(nns_state(third.path(), &net).state_hash(), hash);
        drop(state);
        let state = ReplicatedState::open(dir.path()).unwrap();
        assert!(state.keeps_registry().unwrap());
        assert_eq!(state.state_hash(), hash);
    }

    #[test]
    fn the_first_block_executes_its_payload_after_installing() {
        // A governance call in the installing block itself executes against the genesis.
        let net = network();
        let dir = tempfile::tempdir().unwrap();
        let mut state = ReplicatedState::open(dir.path()).unwrap();
        let m = propose(&net, 0, 1, T0, elect("2.0.0"));
        let mut verified = VerifiedSignatures::with_capacity(1);
        let r = state
            .execute_installing_registry(
                Height::new(1),
                T0,
                &NET,
                std::slice::from_ref(&m),
                &mut verified,
                &genesis(&net),
            )
            .unwrap();
        assert_eq!(r.executed, vec![m.id()]);
        assert_eq!(
            reply(&state, &m),
            Some(GovernanceReply::Proposed { proposal_id: 1 })
        );
    }
}
