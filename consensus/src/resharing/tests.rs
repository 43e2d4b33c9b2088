//! A subnet of four grows to six and shrinks to three by two resharings, with a
//! Byzantine dealer in the first: every new committee signs with the genesis group key.

use super::*;
use crypto::{
    reshare::{EncryptionSecretKey, OpenedValue},
    threshold::{SignatureShare, deal},
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const MSG: &[u8] = b"cup content";

fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}

/// Receiver `me`'s new shares from an outcome: each chosen dealing opened, or, where it
/// does not open, the dealer's answer to its complaint.
fn new_shares(
    plan: &Plan,
    out: &Outcome,
    dealings: &[Dealing],
    answers: &[Answer],
    me: u32,
    key: &EncryptionSecretKey,
) -> (SecretShare, SecretShare) {
    let share = |k: Threshold, dealers: &[u32]| {
        let r = plan.reshare(k);
        let opened: Vec<OpenedValue> = dealers
            .iter()
            .map(|i| {
                let d = dealings.iter().find(|d| d.dealer == *i).expect("dealing");
                let d = match k {
                    Threshold::Low => &d.low,
                    Threshold::High => &d.high,
                };
                r.open(d, me, key).unwrap_or_else(|_| {
                    let a = answers
                        .iter()
                        .find(|a| {
                            a.key == k
                                && a.justification.dealer == *i
                                && a.justification.receiver == me
                        })
                        .unwrap_or_else(|| panic!("receiver {me} cannot open dealer {i}'s {k:?}"));
                    r.check_justification(d, &a.justification).expect("answer")
                })
            })
            .collect();
        r.combine(me, &opened).expect("combine")
    };
    (
        share(Threshold::Low, &out.low_dealers),
        share(Threshold::High, &out.high_dealers),
    )
}

/// The group signature on MSG from the last `t` of `shares` (high key).
fn signs(c: &Committee, shares: &[SecretShare], group: &ThresholdPublicKey) {
    let t = c.high.threshold as usize;
    let sigs: Vec<SignatureShare> = shares[shares.len() - t..]
        .iter()
        .map(|s| s.sign(domain::CUP_CONTENT, MSG))
        .collect();
    for s in &sigs {
        c.high
            .verify_share(domain::CUP_CONTENT, MSG, s)
            .expect("each share matches the committee's share key");
    }
    group
        .verify(
            domain::CUP_CONTENT,
            MSG,
            &c.high.combine(&sigs).expect("combine"),
        )
        .expect("the genesis group key verifies the new committee's signature");
}

#[test]
fn four_grow_to_six_past_a_bad_dealer_then_shrink_to_three_keeping_the_group_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let low0 = deal(4, low_threshold(4), &mut rng).expect("deal");
    let high0 = deal(4, high_threshold(4), &mut rng).expect("deal");
    let genesis = Committee {
        nodes: (0..4).map(node).collect(),
        low: low0.public.clone(),
        high: high0.public.clone(),
    };
    let keys: Vec<EncryptionSecretKey> = (0..6)
        .map(|_| EncryptionSecretKey::generate(&mut rng))
        .collect();
    let public = |ix: &[usize]| ix.iter().map(|i| keys[*i].public_key()).collect::<Vec<_>>();
    let subnet = SubnetId([1; 32]);
    assert_eq!(
        Plan::new(
            subnet,
            Height::new(10),
            RegistryVersion::new(3),
            genesis.clone(),
            genesis.nodes.clone(),
            public(&[0, 1, 2, 3]),
        ),
        Ok(None),
        "no change, no resharing"
    );
    let grow = Plan::new(
        subnet,
        Height::new(10),
        RegistryVersion::new(3),
        genesis.clone(),
        (0..6).map(node).collect(),
        public(&[0, 1, 2, 3, 4, 5]),
    )
    .expect("valid")
    .expect("a change");

    // Dealer 1 sends receiver 5 a bad high value and never answers its complaint.
    let mut dealings: Vec<Dealing> = (0..4)
        .map(|i| grow.deal(&low0.shares[i], &high0.shares[i]).expect("deal"))
        .collect();
    assert_eq!(
        grow.deal(&low0.shares[0], &high0.shares[0]).expect("deal"),
        dealings[0],
        "a dealer deals the same again after a crash"
    );
    let r = grow.reshare(Threshold::High);
    let other = r.deal(&high0.shares[1], &mut rng).expect("deal");
    dealings[1].high.ciphertexts[5] = other.ciphertexts[5].clone();
    for d in &dealings {
        grow.verify_dealing(d).expect("nothing public is wrong");
    }
    assert!(r.open(&dealings[1].high, 5, &keys[5]).is_err());
    let complaints = [
        Complaint {
            dealer: 1,
            receiver: 5,
            key: Threshold::High,
        },
        // A false complaint about dealer 0, which it answers.
        Complaint {
            dealer: 0,
            receiver: 4,
            key: Threshold::High,
        },
    ];
    let answers = [Answer {
        key: Threshold::High,
        justification: r.justify(&high0.shares[0], 4).expect("justify"),
    }];
    let out = grow
        .outcome(&dealings, &complaints, &answers)
        .expect("enough honest dealers");
    assert_eq!(out.high_dealers, vec![0, 2, 3], "dealer 1 disqualified");
    assert_eq!(
        out.low_dealers,
        vec![0, 1],
        "its low dealing had no complaint"
    );
    assert_eq!(out.committee.high.group_key, genesis.high.group_key);
    assert_eq!(out.committee.low.group_key, genesis.low.group_key);
    assert_eq!(out.committee.high.threshold as usize, high_threshold(6));
    let six: Vec<(SecretShare, SecretShare)> = (0..6u32)
        .map(|j| new_shares(&grow, &out, &dealings, &answers, j, &keys[j as usize]))
        .collect();
    let highs: Vec<SecretShare> = six.iter().map(|s| s.1.clone()).collect();
    signs(&out.committee, &highs, &genesis.high);
    // Without enough qualified dealers there is no outcome (the next interval tries again).
    let short = grow.outcome(&dealings[..2], &complaints, &answers);
    assert!(
        matches!(
            short,
            Err(ResharingError::NotEnough {
                key: Threshold::High,
                ..
            })
        ),
        "{short:?}"
    );

    // Shrink to three of them (two of the original four and one of the new), all honest.
    let keep = [2usize, 3, 5];
    let shrink = Plan::new(
        subnet,
        Height::new(20),
        RegistryVersion::new(5),
        out.committee.clone(),
        keep.iter().map(|i| node(*i as u8)).collect(),
        public(&keep),
    )
    .expect("valid")
    .expect("a change");
    let dealings2: Vec<Dealing> = six
        .iter()
        .map(|(l, h)| shrink.deal(l, h).expect("deal"))
        .collect();
    let out2 = shrink.outcome(&dealings2, &[], &[]).expect("outcome");
    assert_eq!(out2.committee.high.group_key, genesis.high.group_key);
    let three: Vec<SecretShare> = keep
        .iter()
        .enumerate()
        .map(|(j, k)| new_shares(&shrink, &out2, &dealings2, &[], j as u32, &keys[*k]).1)
        .collect();
    signs(&out2.committee, &three, &genesis.high);
    // A dealing of the first resharing does not count in the second.
    assert!(shrink.verify_dealing(&dealings[0]).is_err());
}

#[test]
fn a_plan_refuses_an_empty_or_duplicated_committee_and_missing_keys() {
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let low = deal(4, 2, &mut rng).expect("deal");
    let high = deal(4, 3, &mut rng).expect("deal");
    let from = Committee {
        nodes: (0..4).map(node).collect(),
        low: low.public,
        high: high.public,
    };
    let k = EncryptionSecretKey::generate(&mut rng).public_key();
    let plan = |to: Vec<NodeId>, keys: Vec<EncryptionPublicKey>| {
        Plan::new(
            SubnetId([1; 32]),
            Height::new(10),
            RegistryVersion::new(3),
            from.clone(),
            to,
            keys,
        )
    };
    assert_eq!(plan(vec![], vec![]), Err(ResharingError::Empty));
    assert_eq!(
        plan(vec![node(7), node(7)], vec![k, k]),
        Err(ResharingError::Duplicate(node(7)))
    );
    assert_eq!(
        plan(vec![node(7)], vec![]),
        Err(ResharingError::KeyCount {
            keys: 0,
            members: 1
        })
    );
}
