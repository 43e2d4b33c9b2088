//! The registry under a malicious user: refused requests cost no whole-registry decode,
//! and what was signed for another network is refused.

use super::*;

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
