//! Governance through the [`Registry`] service: every adoption and rejection rule, every
//! refused proposal with its message, and the guarantee that refusals change nothing.

use crate::{
    Registry, RegistryError,
    genesis::{GeneratedNetwork, NetworkParams, generate_network},
    governance::{
        Ballot, GovernanceError, ProposalId, ProposalKind, ProposalStatus, SignedBallot,
        SignedSubmission, Submission, Vote,
    },
    records::{NeuronRecord, RegistryRecord, SubnetRecord, keys},
    store::{MemoryStore, Mutation, RegistryStore, RocksStore},
};
use rand::SeedableRng;
use types::{CryptoHash, Height, NetworkId, RegistryVersion, ReplicaVersion, SubnetId};

const HOUR_NS: u64 = 3600 * 1_000_000_000;
/// The network the fixture's registry serves.
const NET: NetworkId = NetworkId([7; 32]);

fn v(s: &str) -> ReplicaVersion {
    ReplicaVersion::new(s).expect("valid version")
}

fn sha(c: char) -> String {
    c.to_string().repeat(64)
}

struct Fixture<S: RegistryStore> {
    reg: Registry<S>,
    net: GeneratedNetwork,
    now_ns: u64,
    nonce: u64,
}

fn network(neurons: usize) -> GeneratedNetwork {
    let params = NetworkParams {
        nodes: 4,
        neurons,
        dkg_interval_length: 9,
        unit_delay_ms: 300,
        initial_notary_delay_ms: 100,
        base_port: 20000,
        replica_version: v("1.0.0"),
        package_sha256: sha('a'),
        package_urls: vec!["http://127.0.0.1:1/one.tar.gz".into()],
        genesis_time_ns: 1_000,
    };
    generate_network(&params, &mut rand_chacha::ChaCha20Rng::seed_from_u64(7)).expect("generate")
}

impl Fixture<MemoryStore> {
    /// A registry whose neurons have the given voting powers.
    fn new(powers: &[u64]) -> Self {
        Self::with_store(MemoryStore::new(), powers)
    }
}

impl<S: RegistryStore> Fixture<S> {
    fn with_store(store: S, powers: &[u64]) -> Self {
        let mut net = network(powers.len());
        for (n, p) in net.genesis.neurons.iter_mut().zip(powers) {
            n.voting_power = *p;
        }
        let mut reg = Registry::open(store).expect("open");
        reg.init(&net.genesis.mutations(), 4 * 24 * HOUR_NS)
            .expect("init");
        Self {
            reg,
            net,
            now_ns: HOUR_NS,
            nonce: 0,
        }
    }

    fn subnet(&self) -> SubnetId {
        self.net.genesis.subnets[0].subnet_id
    }

    fn propose(&mut self, neuron: usize, kind: ProposalKind) -> Result<ProposalId, RegistryError> {
        self.nonce += 1;
        let s = Submission {
            network: NET,
            neuron_id: neuron as u64,
            nonce: self.nonce,
            kind,
        };
        let signed = SignedSubmission::sign(s, &self.net.neuron_keys[neuron]);
        self.submit_signed(&signed)
    }

    /// Verifies, then submits, as the server does.
    fn submit_signed(&mut self, signed: &SignedSubmission) -> Result<ProposalId, RegistryError> {
        let verified = self.reg.verify_submission(&NET, signed)?;
        self.reg.submit(self.now_ns, &verified)
    }

    /// Verifies, then votes, as the server does.
    fn vote_signed(&mut self, signed: &SignedBallot) -> Result<ProposalStatus, RegistryError> {
        let verified = self.reg.verify_ballot(&NET, signed)?;
        self.reg.vote(self.now_ns, &verified)
    }

    fn vote(
        &mut self,
        neuron: usize,
        id: ProposalId,
        vote: Vote,
    ) -> Result<ProposalStatus, RegistryError> {
        let b = Ballot {
            network: NET,
            proposal_id: id,
            neuron_id: neuron as u64,
            vote,
        };
        self.vote_signed(&SignedBallot::sign(b, &self.net.neuron_keys[neuron]))
    }

    fn status(&self, id: ProposalId) -> ProposalStatus {
        self.reg.governance().proposals[&id].status
    }

    fn subnet_record(&self) -> SubnetRecord {
        let bytes = self
            .reg
            .store()
            .get(
                &keys::subnet_record(&self.subnet()),
                self.reg.latest_version(),
            )
            .expect("available")
            .expect("present");
        SubnetRecord::decode_value(&bytes).expect("decodes")
    }

    /// Elects `version` with neurons 0 and 1 (a majority of three equal neurons).
    fn elect(&mut self, version: &str) -> ProposalId {
        let id = self
            .propose(
                0,
                ProposalKind::ElectVersion {
                    version: v(version),
                    sha256_hex: sha('b'),
                    urls: vec!["https://example.org/two.tar.zst".into()],
                },
            )
            .expect("valid proposal");
        assert_eq!(self.vote(1, id, Vote::Yes), Ok(ProposalStatus::Executed));
        id
    }

    fn deploy(version: &str, subnet: SubnetId) -> ProposalKind {
        ProposalKind::DeployVersion {
            subnet,
            version: v(version),
        }
    }
}

#[test]
fn elect_then_deploy_changes_the_subnet_record_at_a_new_version() {
    let mut f = Fixture::new(&[100, 100, 100]);
    assert_eq!(f.reg.latest_version(), RegistryVersion::new(1));
    let elect = f.elect("2.0.0");
    let p = &f.reg.governance().proposals[&elect];
    assert_eq!(p.executed_registry_version, Some(RegistryVersion::new(2)));
    let deploy = f
        .propose(2, Fixture::<MemoryStore>::deploy("2.0.0", f.subnet()))
        .expect("valid");
    assert_eq!(f.status(deploy), ProposalStatus::Open);
    assert_eq!(f.vote(0, deploy, Vote::Yes), Ok(ProposalStatus::Executed));
    assert_eq!(f.reg.latest_version(), RegistryVersion::new(3));
    assert_eq!(f.subnet_record().replica_version, v("2.0.0"));
    // The record as of version 2 still names the old version.
    let old = f
        .reg
        .store()
        .get(&keys::subnet_record(&f.subnet()), RegistryVersion::new(2));
    let old = SubnetRecord::decode_value(&old.expect("ok").expect("present")).expect("decodes");
    assert_eq!(old.replica_version, v("1.0.0"));
}

#[test]
fn adopted_at_once_only_when_yes_exceeds_half() {
    // Four equal neurons: two yes is exactly half, not more.
    let mut f = Fixture::new(&[100, 100, 100, 100]);
    let id = f
        .propose(
            0,
            ProposalKind::ElectVersion {
                version: v("2"),
                sha256_hex: sha('c'),
                urls: vec!["http://h/p".into()],
            },
        )
        .expect("valid");
    assert_eq!(f.vote(1, id, Vote::Yes), Ok(ProposalStatus::Open));
    assert_eq!(f.vote(2, id, Vote::Yes), Ok(ProposalStatus::Executed));
    // A proposer holding a majority alone is adopted on submission.
    let mut f = Fixture::new(&[60, 40]);
    let id = f
        .propose(
            0,
            ProposalKind::ElectVersion {
                version: v("2"),
                sha256_hex: sha('c'),
                urls: vec!["http://h/p".into()],
            },
        )
        .expect("valid");
    assert_eq!(f.status(id), ProposalStatus::Executed);
}

#[test]
fn rejected_at_once_when_no_reaches_half() {
    let mut f = Fixture::new(&[100, 100, 100, 100]);
    let id = f.propose(0, Fixture::<MemoryStore>::deploy("1.0.0", f.subnet()));
    // (Deploying the running version is refused; use an election instead.)
    assert!(id.is_err());
    let id = f
        .propose(
            0,
            ProposalKind::ElectVersion {
                version: v("2"),
                sha256_hex: sha('c'),
                urls: vec!["http://h/p".into()],
            },
        )
        .expect("valid");
    assert_eq!(f.vote(1, id, Vote::No), Ok(ProposalStatus::Open));
    let before = f.reg.latest_version();
    assert_eq!(f.vote(2, id, Vote::No), Ok(ProposalStatus::Rejected));
    assert_eq!(
        f.reg.latest_version(),
        before,
        "a rejected proposal writes nothing"
    );
    assert!(matches!(
        f.vote(3, id, Vote::Yes),
        Err(RegistryError::Governance(GovernanceError::NotOpen {
            status: ProposalStatus::Rejected,
            ..
        }))
    ));
}

/// At the deadline: adopted iff yes > no and yes >= 3% of the total.
#[test]
fn deadline_rule_table() {
    // (voting powers, votes after the proposer's yes, expected status at the deadline)
    type Case = (&'static [u64], &'static [(usize, Vote)], ProposalStatus);
    let table: &[Case] = &[
        (&[5, 3, 92], &[(1, Vote::No)], ProposalStatus::Executed), // 5 > 3, 5 >= 3
        (&[2, 1, 97], &[(1, Vote::No)], ProposalStatus::Rejected), // 2 > 1 but 2 < 3% of 100
        (&[3, 97], &[], ProposalStatus::Executed),                 // exactly 3%
        (&[5, 5, 90], &[(1, Vote::No)], ProposalStatus::Rejected), // a tie is not adoption
        (&[5, 6, 89], &[(1, Vote::No)], ProposalStatus::Rejected), // more no than yes
    ];
    for (powers, votes, expected) in table {
        let mut f = Fixture::new(powers);
        let id = f
            .propose(
                0,
                ProposalKind::ElectVersion {
                    version: v("2"),
                    sha256_hex: sha('c'),
                    urls: vec!["http://h/p".into()],
                },
            )
            .expect("valid");
        for (neuron, vote) in votes.iter() {
            assert_eq!(
                f.vote(*neuron, id, *vote),
                Ok(ProposalStatus::Open),
                "{powers:?}"
            );
        }
        let deadline = f.now_ns + 4 * 24 * HOUR_NS;
        assert!(!f.reg.governance().any_deadline_passed(deadline - 1));
        assert!(f.reg.governance().any_deadline_passed(deadline));
        f.reg.tick(f.now_ns + 4 * 24 * HOUR_NS - 1).expect("tick");
        assert_eq!(
            f.status(id),
            ProposalStatus::Open,
            "{powers:?}: decided before the deadline"
        );
        f.reg.tick(f.now_ns + 4 * 24 * HOUR_NS).expect("tick");
        assert_eq!(f.status(id), *expected, "{powers:?} {votes:?}");
    }
}

#[test]
fn ballots_snapshot_voting_power_when_the_proposal_is_made() {
    let mut f = Fixture::new(&[100, 100, 100]);
    let id = f
        .propose(
            0,
            ProposalKind::ElectVersion {
                version: v("2"),
                sha256_hex: sha('c'),
                urls: vec!["http://h/p".into()],
            },
        )
        .expect("valid");
    // Neuron 1 gets huge voting power afterwards, and a new neuron 9 appears.
    let mut n1 = f.reg.snapshot().expect("snapshot").neurons[&1].clone();
    n1.voting_power = 10_000;
    let n9 = NeuronRecord {
        id: 9,
        controller: f.net.neuron_keys[2].public_key(),
        voting_power: 5,
        extensions: Default::default(),
    };
    f.reg
        .apply(&[
            Mutation::Update {
                key: keys::neuron(1),
                value: n1.encode_value(),
            },
            Mutation::Insert {
                key: keys::neuron(9),
                value: n9.encode_value(),
            },
        ])
        .expect("apply");
    let p = &f.reg.governance().proposals[&id];
    assert_eq!(p.ballots[&1].voting_power, 100);
    assert_eq!(p.tally().total, 300);
    let b = Ballot {
        network: NET,
        proposal_id: id,
        neuron_id: 9,
        vote: Vote::Yes,
    };
    let signed = SignedBallot::sign(b, &f.net.neuron_keys[2]);
    assert_eq!(
        f.vote_signed(&signed),
        Err(RegistryError::Governance(GovernanceError::NoBallot {
            neuron: 9,
            proposal: id
        }))
    );
}

#[test]
fn votes_need_the_controllers_signature_and_count_once() {
    let mut f = Fixture::new(&[100, 100, 100]);
    let id = f
        .propose(
            0,
            ProposalKind::ElectVersion {
                version: v("2"),
                sha256_hex: sha('c'),
                urls: vec!["http://h/p".into()],
            },
        )
        .expect("valid");
    let version = f.reg.latest_version();
    // Neuron 1's vote signed with neuron 2's key.
    let b = Ballot {
        network: NET,
        proposal_id: id,
        neuron_id: 1,
        vote: Vote::Yes,
    };
    let forged = SignedBallot::sign(b, &f.net.neuron_keys[2]);
    assert_eq!(
        f.vote_signed(&forged),
        Err(RegistryError::Governance(GovernanceError::BadSignature(1)))
    );
    assert_eq!(f.reg.governance().proposals[&id].ballots[&1].vote, None);
    assert_eq!(f.reg.latest_version(), version);
    assert_eq!(
        f.vote(0, id, Vote::No),
        Err(RegistryError::Governance(GovernanceError::AlreadyVoted {
            neuron: 0,
            proposal: id
        }))
    );
    assert_eq!(
        f.vote(1, 99, Vote::Yes),
        Err(RegistryError::Governance(GovernanceError::UnknownProposal(
            99
        )))
    );
}

#[test]
fn a_replayed_submission_is_refused() {
    let mut f = Fixture::new(&[100, 100, 100]);
    let s = Submission {
        network: NET,
        neuron_id: 0,
        nonce: 42,
        kind: ProposalKind::ElectVersion {
            version: v("2"),
            sha256_hex: sha('c'),
            urls: vec!["http://h/p".into()],
        },
    };
    let signed = SignedSubmission::sign(s, &f.net.neuron_keys[0]);
    let id = f.submit_signed(&signed).expect("first");
    assert_eq!(
        f.submit_signed(&signed),
        Err(RegistryError::Governance(GovernanceError::Replay {
            neuron: 0,
            nonce: 42,
            existing: id
        }))
    );
}

/// Each refused proposal says why, and creates neither a proposal nor a registry version.
#[test]
fn refused_proposals_table() {
    let mut f = Fixture::new(&[100, 100, 100]);
    f.elect("2.0.0");
    let subnet = f.subnet();
    let elect = |version: &str, sha256_hex: String, urls: &[&str]| ProposalKind::ElectVersion {
        version: v(version),
        sha256_hex,
        urls: urls.iter().map(|s| s.to_string()).collect(),
    };
    let recover = |subnet, version: &str, height: u64| ProposalKind::RecoverSubnet {
        subnet,
        version: v(version),
        height: Height::new(height),
        state_hash: CryptoHash([5; 32]),
    };
    let table: Vec<(ProposalKind, &str)> = vec![
        (
            Fixture::<MemoryStore>::deploy("9.9.9", subnet),
            "version 9.9.9 is not elected",
        ),
        (recover(subnet, "9.9.9", 10), "version 9.9.9 is not elected"),
        (recover(SubnetId([9; 32]), "2.0.0", 10), "does not exist"),
        (recover(subnet, "2.0.0", 0), "height must be at least 1"),
        (
            ProposalKind::RetireVersion {
                versions: vec![v("1.0.0")],
            },
            "version 1.0.0 is in use by subnet",
        ),
        (
            ProposalKind::RetireVersion {
                versions: vec![v("7")],
            },
            "version 7 is not elected",
        ),
        (
            elect("3", "abc".into(), &["http://h/p"]),
            "64 lowercase hex characters",
        ),
        (
            elect("3", sha('A'), &["http://h/p"]),
            "64 lowercase hex characters",
        ),
        (
            elect("3", sha('c'), &["file:///tmp/p.tar.gz"]),
            "scheme \"file\" is not allowed",
        ),
        (elect("3", sha('c'), &["not a url"]), "is not usable"),
        (elect("3", sha('c'), &[]), "has no download URL"),
        (
            elect("2.0.0", sha('c'), &["http://h/p"]),
            "version 2.0.0 is already elected",
        ),
        (
            Fixture::<MemoryStore>::deploy("1.0.0", subnet),
            "already runs version 1.0.0",
        ),
        (
            Fixture::<MemoryStore>::deploy("2.0.0", SubnetId([9; 32])),
            "does not exist",
        ),
        (
            ProposalKind::UpdateSubnetConfig {
                subnet,
                halt_at_cup_height: Some(false),
                is_halted: None,
                unit_delay_ms: None,
                initial_notary_delay_ms: None,
                dkg_interval_length: None,
            },
            "changes nothing",
        ),
        (
            ProposalKind::UpdateSubnetConfig {
                subnet,
                halt_at_cup_height: None,
                is_halted: None,
                unit_delay_ms: None,
                initial_notary_delay_ms: None,
                dkg_interval_length: Some(0),
            },
            "dkg_interval_length 0 is outside",
        ),
    ];
    for (kind, message) in table {
        let version = f.reg.latest_version();
        let proposals = f.reg.governance().proposals.len();
        let err = f.propose(0, kind.clone()).expect_err("must be refused");
        assert!(err.to_string().contains(message), "{kind:?}: {err}");
        assert_eq!(f.reg.latest_version(), version, "{kind:?}");
        assert_eq!(f.reg.governance().proposals.len(), proposals, "{kind:?}");
    }
    let err = f
        .submit_signed(&SignedSubmission::sign(
            Submission {
                network: NET,
                neuron_id: 77,
                nonce: 1,
                kind: ProposalKind::RetireVersion {
                    versions: vec![v("2.0.0")],
                },
            },
            &f.net.neuron_keys[0],
        ))
        .expect_err("unknown neuron");
    assert_eq!(
        err,
        RegistryError::Governance(GovernanceError::UnknownNeuron(77))
    );
}

/// A proposal valid when made can fail when executed; the failure is recorded with its
/// reason and writes nothing.
#[test]
fn execution_failure_is_recorded_with_the_reason() {
    let mut f = Fixture::new(&[100, 100, 100]);
    f.elect("2.0.0");
    let retire = f
        .propose(
            0,
            ProposalKind::RetireVersion {
                versions: vec![v("2.0.0")],
            },
        )
        .expect("valid now");
    let deploy = f
        .propose(0, Fixture::<MemoryStore>::deploy("2.0.0", f.subnet()))
        .expect("valid");
    assert_eq!(f.vote(1, deploy, Vote::Yes), Ok(ProposalStatus::Executed));
    let version = f.reg.latest_version();
    assert_eq!(f.vote(1, retire, Vote::Yes), Ok(ProposalStatus::Failed));
    let p = &f.reg.governance().proposals[&retire];
    assert!(
        p.failure_reason
            .as_deref()
            .is_some_and(|r| r.contains("in use by subnet")),
        "{p:?}"
    );
    assert_eq!(f.reg.latest_version(), version);
}

#[test]
fn governance_state_survives_reopening_a_rocksdb_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (open_id, subnet) = {
        let mut f = Fixture::with_store(
            RocksStore::open(dir.path()).expect("open"),
            &[100, 100, 100],
        );
        f.elect("2.0.0");
        let id = f
            .propose(2, Fixture::<RocksStore>::deploy("2.0.0", f.subnet()))
            .expect("valid");
        (id, f.subnet())
    };
    let reg = Registry::open(RocksStore::open(dir.path()).expect("reopen")).expect("open");
    assert_eq!(reg.latest_version(), RegistryVersion::new(2));
    let p = &reg.governance().proposals[&open_id];
    assert_eq!(p.status, ProposalStatus::Open);
    assert_eq!(p.tally().yes, 100);
    assert_eq!(p.kind, Fixture::<RocksStore>::deploy("2.0.0", subnet));
    assert_eq!(reg.governance().next_proposal_id, open_id + 1);
    assert_eq!(reg.governance().proposals.len(), 2);
}

#[test]
fn init_refuses_a_second_genesis_and_invariants_refuse_bad_batches() {
    let mut f = Fixture::new(&[100, 100, 100]);
    let again = f.reg.init(&f.net.genesis.mutations(), 1);
    assert_eq!(
        again,
        Err(RegistryError::AlreadyInitialized(RegistryVersion::new(1)))
    );
    // Removing a member's node record breaks "members exist".
    let node = f.net.genesis.nodes[0].node_id;
    let err = f
        .reg
        .apply(&[Mutation::Delete {
            key: keys::node_record(&node),
        }])
        .expect_err("refused");
    assert!(
        err.to_string().contains("which has no node record"),
        "{err}"
    );
    // A node record whose proof of possession is another key's.
    let mut record = f.reg.snapshot().expect("s").nodes[&node].clone();
    record.bls_proof_of_possession = f.net.nodes[1].bls.prove_possession();
    let err = f
        .reg
        .apply(&[Mutation::Update {
            key: keys::node_record(&node),
            value: record.encode_value(),
        }])
        .expect_err("refused");
    assert!(err.to_string().contains("proof of possession"), "{err}");
    assert_eq!(f.reg.latest_version(), RegistryVersion::new(1));
}

#[test]
fn local_reads_give_the_subnet_its_members_and_a_deterministic_genesis_cup() {
    use crate::local::{registry_cup, subnet_at, subnet_of};
    let mut f = Fixture::new(&[100, 100, 100]);
    let v1 = RegistryVersion::new(1);
    let subnet = subnet_at(f.reg.store(), &f.subnet(), v1).expect("subnet");
    assert_eq!(subnet.members.len(), 4);
    for (i, n) in f.net.nodes.iter().enumerate() {
        assert_eq!(subnet.members[i].node_id, n.record.node_id);
        assert_eq!(subnet.index_of(&n.record.node_id), Some(i));
        assert_eq!(
            subnet_of(f.reg.store(), &n.record.node_id, v1).expect("read"),
            Some(f.subnet())
        );
    }
    let stranger = f.net.neuron_keys[0].node_id();
    assert_eq!(subnet.index_of(&stranger), None);
    assert_eq!(subnet_of(f.reg.store(), &stranger, v1).expect("read"), None);

    let cup = registry_cup(f.reg.store(), &f.subnet(), v1).expect("cup");
    assert_eq!(cup.kind, cup::RegistryCupKind::Genesis);
    assert_eq!(cup.content.height, types::Height::ZERO);
    assert_eq!(cup.content.registry_version, v1);
    assert_eq!(cup.content.state_hash, types::empty_state_hash());
    assert_eq!(cup.content.replica_version, v("1.0.0"));
    // A later registry version does not change the CUP the record describes.
    f.elect("2.0.0");
    let later = f.reg.latest_version();
    assert!(later > v1);
    assert_eq!(
        registry_cup(f.reg.store(), &f.subnet(), later).expect("cup"),
        cup
    );
    // A version the store does not have is an error, not a guess.
    let ahead = RegistryVersion::new(later.get() + 1);
    assert!(registry_cup(f.reg.store(), &f.subnet(), ahead).is_err());
}

#[test]
fn a_secondary_follows_the_primary_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = dir.path().join("registry");
    let mut f = Fixture::with_store(RocksStore::open(&primary).expect("open"), &[100, 100]);
    let mut follower =
        RocksStore::open_secondary(&primary, &dir.path().join("follower")).expect("secondary");
    assert_eq!(follower.latest_version(), RegistryVersion::new(1));
    f.elect("2.0.0");
    let latest = f.reg.latest_version();
    assert_eq!(follower.latest_version(), RegistryVersion::new(1));
    assert_eq!(follower.catch_up().expect("catch up"), latest);
    assert!(
        follower
            .get(&keys::replica_version(&v("2.0.0")), latest)
            .expect("read")
            .is_some()
    );
    let refused = follower
        .commit(None, &[("aux".to_string(), Some(vec![1]))])
        .expect_err("a secondary is read-only");
    assert!(refused.to_string().contains("secondary"), "{refused}");
    assert!(
        RocksStore::open_secondary(&dir.path().join("absent"), &dir.path().join("f2")).is_err()
    );
}

mod abuse;
mod membership;

/// A recovery is one registry version naming both the release and the recovery CUP:
/// the registry CUP built from it is a recovery at the height, with the state hash, the
/// adoption's time and the new release. A second recovery may not go below the first.
#[test]
fn recover_subnet_writes_a_recovery_cup_and_the_release_at_one_version() {
    use crate::local::registry_cup;
    use cup::RegistryCupKind;
    let mut f = Fixture::new(&[100, 100, 100]);
    f.elect("2.0.0");
    let subnet = f.subnet();
    let recover = |height: u64, hash: u8| ProposalKind::RecoverSubnet {
        subnet,
        version: v("2.0.0"),
        height: Height::new(height),
        state_hash: CryptoHash([hash; 32]),
    };
    let id = f.propose(0, recover(30, 5)).expect("valid");
    f.now_ns += 60 * 1_000_000_000;
    assert_eq!(f.vote(1, id, Vote::Yes), Ok(ProposalStatus::Executed));
    let at = f.reg.latest_version();
    let cup = registry_cup(f.reg.store(), &subnet, at).expect("a registry CUP");
    assert_eq!(cup.kind, RegistryCupKind::Recovery);
    assert_eq!(cup.content.height, Height::new(30));
    assert_eq!(cup.content.state_hash, CryptoHash([5; 32]));
    assert_eq!(cup.content.replica_version, v("2.0.0"));
    assert_eq!(cup.content.registry_version, at);
    assert_eq!(cup.content.block_time_ns, f.now_ns, "the adoption's time");
    assert_eq!(f.subnet_record().replica_version, v("2.0.0"));

    // Not below the last recovery; at its height again (another attempt), yes.
    let before = f.reg.latest_version();
    let e = f.propose(0, recover(29, 6)).unwrap_err().to_string();
    assert!(
        e.contains("below the subnet's last recovery CUP at 30"),
        "{e}"
    );
    assert_eq!(f.reg.latest_version(), before);
    let again = f.propose(0, recover(30, 6)).expect("valid");
    assert_eq!(f.vote(1, again, Vote::Yes), Ok(ProposalStatus::Executed));
    let cup = registry_cup(f.reg.store(), &subnet, f.reg.latest_version()).expect("CUP");
    assert_eq!(cup.content.state_hash, CryptoHash([6; 32]));
}

/// A recalled version stays listed, marked, and nothing can put a subnet on it again.
#[test]
fn a_recalled_version_cannot_be_deployed_or_recovered_onto() {
    let mut f = Fixture::new(&[100, 100, 100]);
    f.elect("2.0.0");
    let subnet = f.subnet();
    let recall = |version: &str| ProposalKind::RecallVersion {
        version: v(version),
    };
    let id = f.propose(0, recall("2.0.0")).expect("valid");
    assert_eq!(f.vote(1, id, Vote::Yes), Ok(ProposalStatus::Executed));
    let snap = f.reg.snapshot().expect("snapshot");
    assert!(snap.versions[&v("2.0.0")].recalled);
    assert!(!snap.versions[&v("1.0.0")].recalled);
    let before = f.reg.latest_version();
    let refused = [
        (recall("2.0.0"), "version 2.0.0 is already recalled"),
        (recall("9.9.9"), "version 9.9.9 is not elected"),
        (
            Fixture::<MemoryStore>::deploy("2.0.0", subnet),
            "version 2.0.0 is recalled",
        ),
        (
            ProposalKind::RecoverSubnet {
                subnet,
                version: v("2.0.0"),
                height: Height::new(10),
                state_hash: CryptoHash([5; 32]),
            },
            "version 2.0.0 is recalled",
        ),
    ];
    for (kind, why) in refused {
        let e = f.propose(0, kind).unwrap_err().to_string();
        assert!(e.contains(why), "{e} (expected: {why})");
    }
    assert_eq!(
        f.reg.latest_version(),
        before,
        "nothing refused changed the registry"
    );
}

/// A copy reads again only what may still change: the first unsettled id is the oldest
/// proposal not final, and mirroring from it keeps every proposal below it as it was.
#[test]
fn a_copy_mirrors_governance_from_its_first_unsettled_proposal() {
    let mut f = Fixture::new(&[100, 100, 100, 100]);
    let elect = |version: &str| ProposalKind::ElectVersion {
        version: v(version),
        sha256_hex: sha('c'),
        urls: vec!["http://h/p".into()],
    };
    let first = f.propose(0, elect("2")).expect("valid");
    f.vote(1, first, Vote::Yes).expect("vote");
    f.vote(2, first, Vote::Yes).expect("vote");
    let open = f.propose(0, elect("3")).expect("valid");
    let g = f.reg.governance().clone();
    assert_eq!(f.status(first), ProposalStatus::Executed);
    assert_eq!(g.first_unsettled(), open);
    // Every proposal final: the next id.
    let mut settled = g.clone();
    settled.proposals.retain(|&id, _| id < open);
    settled.next_proposal_id = open;
    assert_eq!(settled.first_unsettled(), open);

    // A copy holding only the settled one takes the rest from `open` on.
    let mut copy = Fixture::new(&[100, 100, 100, 100]);
    copy.reg
        .mirror_governance(vec![g.proposals[&first].clone()], open)
        .expect("mirror");
    assert_eq!(copy.reg.governance().first_unsettled(), open);
    let mut decided = g.proposals[&open].clone();
    decided.status = ProposalStatus::Rejected;
    copy.reg
        .mirror_governance_from(open, vec![decided.clone()], open + 1)
        .expect("mirror from");
    let c = copy.reg.governance();
    assert_eq!(c.next_proposal_id, open + 1);
    assert_eq!(c.proposals[&first], g.proposals[&first]);
    assert_eq!(c.proposals[&open], decided);
    assert_eq!(c.first_unsettled(), open + 1);
}
