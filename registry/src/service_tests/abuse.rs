//! The registry under a malicious user: refused requests cost no whole-registry decode,
//! what was signed for another network is refused, and deadline work is bounded per call.

use super::*;
use crate::{governance::MAX_DEADLINE_DECISIONS_PER_CALL, service::MAX_EXECUTIONS_PER_CALL};

const OTHER: NetworkId = NetworkId([8; 32]);

/// The keys, owned (the fixture is borrowed mutably while they sign).
fn copies(keys: &[crypto::ed25519::Ed25519KeyPair]) -> Vec<crypto::ed25519::Ed25519KeyPair> {
    keys.iter()
        .map(|k| crypto::ed25519::Ed25519KeyPair::from_seed(&k.seed()))
        .collect()
}

fn elect_kind(version: &str) -> ProposalKind {
    ProposalKind::ElectVersion {
        version: v(version),
        sha256_hex: sha('c'),
        urls: vec!["http://h/p".into()],
    }
}

fn submission(network: NetworkId, neuron: u64, nonce: u64, kind: ProposalKind) -> Submission {
    Submission {
        network,
        neuron_id: neuron,
        nonce,
        kind,
    }
}

fn ballot(network: NetworkId, proposal: ProposalId, neuron: u64) -> Ballot {
    Ballot {
        network,
        proposal_id: proposal,
        neuron_id: neuron,
        vote: Vote::Yes,
    }
}

#[test]
fn a_refused_submission_or_ballot_never_decodes_the_registry() {
    let mut f = Fixture::new(&[100, 100, 100]);
    let id = f.propose(0, elect_kind("2")).expect("valid");
    let keys = copies(&f.net.neuron_keys);
    let decodes = f.reg.snapshot_decodes();
    let version = f.reg.latest_version();
    for nonce in 100..150 {
        // Neuron 1's proposal signed with neuron 2's key.
        let forged = SignedSubmission::sign(submission(NET, 1, nonce, elect_kind("3")), &keys[2]);
        assert_eq!(
            f.submit_signed(&forged),
            Err(RegistryError::Governance(GovernanceError::BadSignature(1)))
        );
        let unknown = SignedSubmission::sign(submission(NET, 77, nonce, elect_kind("3")), &keys[0]);
        assert_eq!(
            f.submit_signed(&unknown),
            Err(RegistryError::Governance(GovernanceError::UnknownNeuron(
                77
            )))
        );
        let forged_vote = SignedBallot::sign(ballot(NET, id, 1), &keys[2]);
        assert_eq!(
            f.vote_signed(&forged_vote),
            Err(RegistryError::Governance(GovernanceError::BadSignature(1)))
        );
    }
    assert_eq!(
        f.reg.snapshot_decodes(),
        decodes,
        "a badly signed request decoded the whole registry"
    );
    assert_eq!(f.reg.latest_version(), version);
    assert_eq!(f.reg.governance().proposals.len(), 1);
    // An honest vote still counts (and its execution decodes, as it must).
    assert_eq!(f.vote(1, id, Vote::Yes), Ok(ProposalStatus::Executed));
    assert!(f.reg.snapshot_decodes() > decodes);
}

#[test]
fn a_submission_or_ballot_signed_for_another_network_is_refused() {
    let mut f = Fixture::new(&[100, 100, 100]);
    let keys = copies(&f.net.neuron_keys);
    let wrong = RegistryError::Governance(GovernanceError::WrongNetwork {
        signed_for: OTHER,
        expected: NET,
    });
    // Properly signed by neuron 0's controller, but for another network.
    let foreign = SignedSubmission::sign(submission(OTHER, 0, 1, elect_kind("2")), &keys[0]);
    assert_eq!(f.submit_signed(&foreign), Err(wrong.clone()));
    assert!(wrong.to_string().contains("signed for network"), "{wrong}");
    assert!(f.reg.governance().proposals.is_empty());
    // Relabelled for this network, the signature no longer holds.
    let mut relabelled = foreign.clone();
    relabelled.submission.network = NET;
    assert_eq!(
        f.submit_signed(&relabelled),
        Err(RegistryError::Governance(GovernanceError::BadSignature(0)))
    );

    let id = f.propose(0, elect_kind("2")).expect("valid");
    let foreign = SignedBallot::sign(ballot(OTHER, id, 1), &keys[1]);
    assert_eq!(f.vote_signed(&foreign), Err(wrong));
    assert_eq!(f.reg.governance().proposals[&id].ballots[&1].vote, None);
    let mut relabelled = foreign.clone();
    relabelled.ballot.network = NET;
    assert_eq!(
        f.vote_signed(&relabelled),
        Err(RegistryError::Governance(GovernanceError::BadSignature(1)))
    );
    assert_eq!(f.status(id), ProposalStatus::Open);
}

fn count(f: &Fixture<MemoryStore>, status: ProposalStatus) -> usize {
    f.reg
        .governance()
        .proposals
        .values()
        .filter(|p| p.status == status)
        .count()
}

#[test]
fn a_pile_of_expired_proposals_is_worked_off_a_bounded_amount_per_tick() {
    // Neuron 0 alone has no majority: its proposals stay open until the deadline, where
    // its yes (over no no, above 3%) adopts them.
    let mut f = Fixture::new(&[100, 100, 100]);
    let pile = MAX_DEADLINE_DECISIONS_PER_CALL + 20;
    for i in 0..pile {
        f.propose(0, elect_kind(&format!("3.{i}"))).expect("valid");
    }
    assert_eq!(count(&f, ProposalStatus::Open), pile);
    let version = f.reg.latest_version();
    let mut now = f.now_ns + 4 * 24 * HOUR_NS;

    // Past the deadline, a vote is refused even on a proposal no tick has decided yet.
    let last = pile as ProposalId;
    assert!(matches!(
        f.reg
            .verify_ballot(
                &NET,
                &SignedBallot::sign(ballot(NET, last, 1), &f.net.neuron_keys[1])
            )
            .and_then(|b| f.reg.vote(now, &b)),
        Err(RegistryError::Governance(GovernanceError::NotOpen { .. }))
    ));

    f.reg.tick(now).expect("tick");
    assert_eq!(
        count(&f, ProposalStatus::Open),
        pile - MAX_DEADLINE_DECISIONS_PER_CALL,
        "one tick decided more than its bound"
    );
    assert_eq!(count(&f, ProposalStatus::Executed), MAX_EXECUTIONS_PER_CALL);
    assert_eq!(
        f.reg.latest_version().get(),
        version.get() + MAX_EXECUTIONS_PER_CALL as u64
    );
    // The rest follow, a bounded amount per tick, in order.
    let ticks = pile.div_ceil(MAX_EXECUTIONS_PER_CALL);
    for _ in 1..ticks {
        now += 1_000_000_000;
        f.reg.tick(now).expect("tick");
    }
    assert_eq!(count(&f, ProposalStatus::Executed), pile);
    assert_eq!(f.reg.latest_version().get(), version.get() + pile as u64);
    let versions: Vec<RegistryVersion> = f
        .reg
        .governance()
        .proposals
        .values()
        .filter_map(|p| p.executed_registry_version)
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "executed out of order"
    );
}
