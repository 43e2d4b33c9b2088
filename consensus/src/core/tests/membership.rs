//! A subnet of four reshares its threshold keys to six members: the four deal in the
//! interval the summary pinning the new membership starts, the next summary halts them,
//! and its CUP names the six, whose shares (computed from that CUP alone) carry the
//! subnet on under the genesis group key. A Byzantine dealer's bad value is complained
//! about and, unanswered, disqualifies it.

use super::*;
use crate::{
    resharing::{Committee, ResharingItem, shares_from_cup},
    status::Member,
};
use ::crypto::{bls::BlsSignature, reshare::EncryptionSecretKey, threshold::ThresholdPublicKey};

/// A machine joining the subnet: its node key, multi-signature key, encryption key.
struct Joiner {
    ed: Ed25519KeyPair,
    bls: BlsSecretKey,
}

fn joiners(k: usize) -> Vec<Joiner> {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    (0..k)
        .map(|_| Joiner {
            ed: Ed25519KeyPair::generate(&mut rng),
            bls: BlsSecretKey::generate(&mut rng),
        })
        .collect()
}

/// The four genesis nodes then the joiners, as registry version 2 names them.
fn members(net: &Net, joining: &[Joiner]) -> Vec<Member> {
    let keys = &net.cores[0].crypto().keys;
    let n = net.cores.len();
    (0..n + joining.len())
        .map(|i| Member {
            id: node_id(i),
            node_key: if i < n {
                *keys.ed25519[i].as_bytes()
            } else {
                *joining[i - n].ed.public_key().as_bytes()
            },
            encryption_key: Some(encryption_key(i).public_key()),
        })
        .collect()
}

fn info(members: Vec<Member>) -> SubnetInfo {
    SubnetInfo {
        replica_version: version(),
        halt_at_cup_height: false,
        is_halted: false,
        members,
    }
}

/// Registry version 2, with the new membership, reaches every core.
fn change_membership(net: &mut Net, members: Vec<Member>) {
    for i in 0..net.cores.len() {
        let now = net.clocks[i];
        net.cores[i].on_event(
            now,
            Event::Registry {
                version: RegistryVersion::new(2),
                info: info(members.clone()),
            },
        );
    }
    net.settle();
}

/// Advances until `done` holds (or gives up, and the caller's check fails).
fn run_until(net: &mut Net, done: impl Fn(&Net) -> bool) {
    for _ in 0..4_000 {
        if done(net) {
            return;
        }
        net.advance(50 * MS);
    }
}

/// Every CUP node `i` made or adopted, in order.
fn cups(net: &Net, i: usize) -> Vec<(CupContent, Vec<u8>)> {
    net.log[i]
        .iter()
        .filter_map(|a| match a {
            Action::CupReady { content, signature } => Some((content.clone(), signature.clone())),
            _ => None,
        })
        .collect()
}

/// The CUP is signed by the subnet's genesis group key.
fn check_signed(content: &CupContent, signature: &[u8], group: &ThresholdPublicKey) {
    let sig = BlsSignature::from_bytes(signature).unwrap();
    group
        .group_key
        .verify(domain::CUP_CONTENT, &content.encode(), &sig)
        .expect("the CUP verifies with the genesis group key");
}

/// Runs the resharing from four to six; returns the CUP that names the six.
fn reshare_to_six(tamper: Option<(usize, Tamper)>) -> (Net, Vec<Joiner>, CupContent) {
    let mut net = Net::new(4, &[WALL; 4]);
    net.executes = true;
    if let Some((i, t)) = tamper {
        net.tamper[i] = Some(t);
    }
    net.settle();
    let joining = joiners(2);
    let members = members(&net, &joining);
    change_membership(&mut net, members);
    run_until(&mut net, |net| net.cores.iter().all(|c| c.is_halted()));
    for c in &net.cores {
        assert!(c.is_halted(), "{c:?} {:?}", c.stats());
    }
    let (content, signature) = cups(&net, 0).pop().expect("a CUP");
    let genesis_high = net.cores[0].crypto().keys.high.clone();
    check_signed(&content, &signature, &genesis_high);
    (net, joining, content)
}

#[test]
fn four_nodes_reshare_to_six_who_carry_the_subnet_on_under_the_genesis_key() {
    let (net, joining, content) = reshare_to_six(None);
    let keys = net.cores[0].crypto().keys.clone();
    // The summary at 10 pinned the change and started the resharing; the one at 20
    // finished it, halted the four, and its CUP names the six.
    assert_eq!(content.height, Height::new(20));
    let record = content
        .committee
        .clone()
        .expect("the CUP names a committee");
    assert_eq!(record.nodes, (0..6).map(node_id).collect::<Vec<_>>());
    assert_eq!(record.low.group_key, keys.low.group_key);
    assert_eq!(record.high.group_key, keys.high.group_key);
    assert_eq!(record.high.share_keys.len(), 6);
    // All four dealt; the chosen dealers are the lowest t of them.
    assert_eq!(record.dealt.high.len(), keys.high.threshold as usize);
    assert_eq!(record.dealt.low.len(), keys.low.threshold as usize);

    // The six start from that CUP, each with shares computed from it alone.
    let committee = Committee::from_cup(&record);
    let bls: Vec<BlsSecretKey> = (0..4)
        .map(|i| net.cores[i].crypto().secrets.bls.clone())
        .chain(joining.iter().map(|j| j.bls.clone()))
        .collect();
    let eds: Vec<[u8; 32]> = (0..4)
        .map(|i| net.cores[i].crypto().secrets.ed25519.seed())
        .chain(joining.iter().map(|j| j.ed.seed()))
        .collect();
    let subnet_keys = SubnetKeys {
        ed25519: eds
            .iter()
            .map(|s| Ed25519KeyPair::from_seed(s).public_key())
            .collect(),
        bls: bls.iter().map(|k| k.public_key()).collect(),
        low: record.low.clone(),
        high: record.high.clone(),
    };
    let mut registry = registry();
    registry.push((RegistryVersion::new(2), info(members(&net, &joining))));
    let clocks: Vec<Now> = vec![net.clocks[0]; 6];
    let cores: Vec<Consensus<RealCrypto>> = (0..6)
        .map(|i| {
            let key: EncryptionSecretKey = encryption_key(i);
            let (low_share, high_share) = shares_from_cup(&record, i as u32, &key).unwrap();
            let crypto = RealCrypto {
                keys: subnet_keys.clone(),
                secrets: NodeSecrets {
                    ed25519: Ed25519KeyPair::from_seed(&eds[i]),
                    bls: bls[i].clone(),
                    low_share,
                    high_share,
                    encryption: Some(key),
                },
                hashes: Default::default(),
            };
            Consensus::new(
                Config {
                    committee: Some(committee.clone()),
                    ..config(i as NodeIndex, 6)
                },
                crypto,
                Base::from_cup(&content),
                registry.clone(),
                Vec::new(),
                clocks[i],
            )
            .unwrap()
        })
        .collect();
    let mut six = Net::of(cores, clocks);
    six.executes = true;
    six.loaded = true;
    for i in 0..6 {
        six.offer_payload(i);
    }
    run_until(&mut six, |n| {
        n.cores.iter().all(|c| c.last_cup >= Height::new(30))
    });
    for (i, c) in six.cores.iter().enumerate() {
        assert!(!c.is_halting(), "{c:?}");
        assert!(c.own_share_height.is_some(), "node {i} takes part");
        let (next, signature) = cups(&six, i).pop().expect("a CUP of the six");
        assert_eq!(next.height, Height::new(30));
        check_signed(&next, &signature, &keys.high);
        // The record rides on: a member restarting from this CUP finds its shares.
        assert_eq!(next.committee.as_ref(), Some(&record));
    }
}

/// Node 0 (the lowest dealer: chosen if qualified) deals receiver 1 a value that does
/// not decrypt (re-signed as its own), and its blocks never arrive, so the spoiled
/// dealing is the one on the chain.
fn spoil_value_for_node_1(c: &Consensus<RealCrypto>, a: Artifact) -> Option<Artifact> {
    match a {
        Artifact::Proposal(_) => None,
        a => Some(respoil(c, a, |d| d.high.ciphertexts[1][0] ^= 1)),
    }
}

/// `a` with `spoil` applied if it is a dealing, signed again in its dealer's name.
fn respoil(
    c: &Consensus<RealCrypto>,
    a: Artifact,
    spoil: impl FnOnce(&mut crate::resharing::Dealing),
) -> Artifact {
    let Artifact::Resharing {
        height,
        item: ResharingItem::Dealing(mut d),
    } = a
    else {
        return a;
    };
    spoil(&mut d.dealing);
    let iv = c.plans.values().next().expect("a plan");
    d.signature = c.crypto.sign_node(
        domain::RESHARING_DEALING,
        &c.dealing_message(iv, &d.dealing),
    );
    Artifact::Resharing {
        height,
        item: ResharingItem::Dealing(d),
    }
}

/// The same dealer, which also keeps quiet when complained about.
fn spoil_and_never_answer(c: &Consensus<RealCrypto>, a: Artifact) -> Option<Artifact> {
    match a {
        Artifact::Resharing {
            item: ResharingItem::Answer(_),
            ..
        } => None,
        a => spoil_value_for_node_1(c, a),
    }
}

#[test]
fn a_bad_value_is_complained_about_and_an_unanswered_dealer_is_not_chosen() {
    let (net, _, content) = reshare_to_six(Some((0, spoil_and_never_answer)));
    let record = content.committee.expect("the CUP names a committee");
    let dealers: Vec<u32> = record.dealt.high.iter().map(|d| d.dealer).collect();
    assert_eq!(dealers, vec![1, 2, 3], "node 0 is disqualified");
    assert!(record.dealt.high_answers.is_empty());
    // Node 1 complained about it, once.
    let complaints = net.log[1]
        .iter()
        .filter(|a| {
            matches!(a, Action::Broadcast(Envelope { artifact: Artifact::Resharing { item: ResharingItem::Complaint(c), .. }, .. })
                if c.complaint.dealer == 0 && c.complaint.receiver == 1)
        })
        .count();
    assert_eq!(complaints, 1);
    for i in 0..6 {
        shares_from_cup(&record, i, &encryption_key(i as usize)).expect("every member's shares");
    }
}

#[test]
fn an_answered_complaint_keeps_the_dealer_and_the_receiver_reads_its_value_from_the_cup() {
    let (_, _, content) = reshare_to_six(Some((0, spoil_value_for_node_1)));
    let record = content.committee.expect("the CUP names a committee");
    let dealers: Vec<u32> = record.dealt.high.iter().map(|d| d.dealer).collect();
    assert_eq!(dealers, vec![0, 1, 2], "node 0 answered and stays");
    let answers: Vec<(u32, u32)> = record
        .dealt
        .high_answers
        .iter()
        .map(|j| (j.dealer, j.receiver))
        .collect();
    assert_eq!(answers, vec![(0, 1)]);
    // Node 1's value from node 0 does not decrypt: it opens through the answer.
    shares_from_cup(&record, 1, &encryption_key(1)).expect("node 1's shares");
}

#[test]
fn a_membership_change_and_an_upgrade_pinned_together_take_effect_at_one_cup() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.executes = true;
    net.settle();
    let joining = joiners(2);
    let next = ReplicaVersion::new("2.0.0").unwrap();
    let info = SubnetInfo {
        replica_version: next.clone(),
        ..info(members(&net, &joining))
    };
    for i in 0..4 {
        let now = net.clocks[i];
        net.cores[i].on_event(
            now,
            Event::Registry {
                version: RegistryVersion::new(2),
                info: info.clone(),
            },
        );
        net.cores[i].on_event(
            now,
            Event::Readiness {
                version: next.clone(),
                ready: true,
                reason: String::new(),
            },
        );
    }
    net.settle();
    run_until(&mut net, |net| net.cores.iter().all(|c| c.is_halted()));
    // The summary at 10 pinned both with a ready quorum, and halted nothing: the
    // resharing it started holds the version back until its end at 20.
    let cups: Vec<CupContent> = cups(&net, 0).into_iter().map(|(c, _)| c).collect();
    let heights: Vec<u64> = cups.iter().map(|c| c.height.get()).collect();
    assert_eq!(heights, vec![10, 20], "{cups:?}");
    assert_eq!(cups[0].next_replica_version, Some(version()));
    assert!(cups[0].committee.is_none());
    assert_eq!(cups[1].next_replica_version, Some(next));
    let record = cups[1].committee.as_ref().expect("the CUP names the six");
    assert_eq!(record.nodes.len(), 6);
}

/// Node 0 deals joiner 4 (outside the committee) a value that does not decrypt, and
/// never answers.
fn spoil_value_for_joiner(c: &Consensus<RealCrypto>, a: Artifact) -> Option<Artifact> {
    match a {
        Artifact::Proposal(_)
        | Artifact::Resharing {
            item: ResharingItem::Answer(_),
            ..
        } => None,
        a => Some(respoil(c, a, |d| d.low.ciphertexts[4][0] ^= 1)),
    }
}

#[test]
fn a_joining_receiver_complains_through_a_member_and_the_unanswered_dealer_is_not_chosen() {
    use crate::resharing::{Plan, SignedComplaint, complaint_message};
    let mut net = Net::new(4, &[WALL; 4]);
    net.executes = true;
    net.tamper[0] = Some(spoil_value_for_joiner);
    net.settle();
    let joining = joiners(2);
    let members = members(&net, &joining);
    change_membership(&mut net, members.clone());
    // The joiner reads member 1's view once node 0's dealing is on its chain.
    let has_dealing_of_0 = |net: &Net| {
        net.cores[1]
            .resharing_view()
            .is_some_and(|v| v.dealings.iter().any(|d| d.dealing.dealer == 0))
    };
    run_until(&mut net, has_dealing_of_0);
    let view = net.cores[1]
        .resharing_view()
        .expect("a resharing under way");
    let keys = &net.cores[1].crypto().keys;
    let committee = Committee {
        nodes: (0..4).map(node_id).collect(),
        low: keys.low.clone(),
        high: keys.high.clone(),
    };
    let plan = Plan::new(
        SubnetId([7; 32]),
        view.height,
        view.registry_version,
        committee,
        members.iter().map(|m| m.id).collect(),
        members.iter().map(|m| m.encryption_key.unwrap()).collect(),
    )
    .unwrap()
    .unwrap();
    let complaints = plan.receiver_complaints(&view, &keys.ed25519, 4, &encryption_key(4));
    assert_eq!(complaints.len(), 1, "{complaints:?}");
    assert_eq!(
        (complaints[0].dealer, complaints[0].key),
        (0, Threshold::Low)
    );
    // A view that lies (another version) makes it complain about nothing.
    let mut lying = view.clone();
    lying.version = ReplicaVersion::new("9.9.9").unwrap();
    assert!(
        plan.receiver_complaints(&lying, &keys.ed25519, 4, &encryption_key(4))
            .is_empty()
    );
    let complaint = complaints[0];
    let signature = joining[0]
        .ed
        .sign(
            domain::RESHARING_COMPLAINT,
            &complaint_message(&view.version, plan.context(), &complaint),
        )
        .0
        .to_vec();
    let now = net.clocks[1];
    net.cores[1].on_event(
        now,
        Event::Resharing(ResharingItem::Complaint(SignedComplaint {
            complaint,
            signature,
        })),
    );
    run_until(&mut net, |net| net.cores.iter().all(|c| c.is_halted()));
    let (content, _) = cups(&net, 1).pop().expect("a CUP");
    let record = content.committee.expect("the CUP names the six");
    let low: Vec<u32> = record.dealt.low.iter().map(|d| d.dealer).collect();
    assert!(!low.contains(&0), "node 0 is not chosen: {low:?}");
    shares_from_cup(&record, 4, &encryption_key(4)).expect("the joiner's shares");
}
