//! The resharing's tests: committees growing and shrinking, bad dealings of every kind,
//! and random committees with bad dealers.

use super::*;
use crate::threshold::{SignatureShare, deal};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use types::domain;

const D: domain::Domain = domain::STATE_CERTIFICATION;
const MSG: &[u8] = b"a state hash";

struct Committee {
    keys: Vec<EncryptionSecretKey>,
    public: Vec<EncryptionPublicKey>,
}

fn committee(m: usize, rng: &mut ChaCha20Rng) -> Committee {
    let keys: Vec<EncryptionSecretKey> =
        (0..m).map(|_| EncryptionSecretKey::generate(rng)).collect();
    let public = keys.iter().map(|k| k.public_key()).collect();
    Committee { keys, public }
}

/// Every receiver's new share from the chosen ones of `dealings`.
fn reshared<'d>(
    r: &Reshare<'_>,
    c: &Committee,
    dealings: impl IntoIterator<Item = &'d ReshareDealing> + Clone,
) -> Vec<SecretShare> {
    let chosen = r
        .choose(dealings.clone().into_iter().map(|d| d.dealer))
        .expect("enough");
    (0..c.keys.len() as u32)
        .map(|j| {
            let opened: Vec<OpenedValue> = dealings
                .clone()
                .into_iter()
                .filter(|d| chosen.contains(&d.dealer))
                .map(|d| r.open(d, j, &c.keys[j as usize]).expect("opens"))
                .collect();
            r.combine(j, &opened).expect("combine")
        })
        .collect()
}

#[test]
fn a_resharing_to_a_larger_committee_keeps_the_group_key_and_its_shares_sign() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let old = deal(4, 3, &mut rng).expect("deal");
    let c = committee(6, &mut rng);
    let r = Reshare {
        context: b"subnet 1, registry version 9",
        old: &old.public,
        receivers: &c.public,
        threshold: 5,
    };
    // All four old members deal; the three lowest are used.
    let dealings: Vec<ReshareDealing> = old
        .shares
        .iter()
        .map(|s| r.deal(s, &mut rng).expect("deal"))
        .collect();
    for d in &dealings {
        r.verify_public(d).expect("valid");
    }
    let shares = reshared(&r, &c, &dealings);
    let chosen: Vec<&ReshareDealing> = dealings.iter().take(3).collect();
    let public = r.public_key(&chosen).expect("public key");
    assert_eq!(public.group_key, old.public.group_key);
    for s in &shares {
        assert_eq!(s.key.public_key(), public.share_keys[s.index as usize]);
    }
    // Any five new shares sign for the old group key; four do not make a signature.
    let sig: Vec<SignatureShare> = shares[1..].iter().map(|s| s.sign(D, MSG)).collect();
    let combined = public.combine(&sig).expect("combine");
    old.public
        .verify(D, MSG, &combined)
        .expect("the genesis key verifies it");
    assert!(matches!(
        public.combine(&sig[..4]),
        Err(CryptoError::NotEnoughShares { .. })
    ));
    // Reshared again, by the new committee, to a smaller one: still the same key.
    let c2 = committee(4, &mut rng);
    let r2 = Reshare {
        context: b"subnet 1, registry version 10",
        old: &public,
        receivers: &c2.public,
        threshold: 3,
    };
    let dealings2: Vec<ReshareDealing> = shares[1..]
        .iter()
        .map(|s| r2.deal(s, &mut rng).expect("deal"))
        .collect();
    let shares2 = reshared(&r2, &c2, &dealings2);
    let sig2: Vec<SignatureShare> = shares2[..3].iter().map(|s| s.sign(D, MSG)).collect();
    let public2 = r2
        .public_key(&dealings2.iter().take(5).collect::<Vec<_>>())
        .expect("public key");
    old.public
        .verify(D, MSG, &public2.combine(&sig2).expect("combine"))
        .expect("the genesis key verifies it");
}

#[test]
fn random_committees_with_bad_dealers_keep_the_group_key() {
    use crate::threshold::{high_threshold, low_threshold, max_faulty};
    use rand::Rng;
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    for case in 0..24 {
        let n = rng.random_range(1..=7usize);
        let m = rng.random_range(1..=7usize);
        let t = if rng.random_bool(0.5) {
            low_threshold(n)
        } else {
            high_threshold(n)
        };
        let t_new = if rng.random_bool(0.5) {
            low_threshold(m)
        } else {
            high_threshold(m)
        };
        let old = deal(n, t, &mut rng).expect("deal");
        let c = committee(m, &mut rng);
        let context = format!("case {case}");
        let r = Reshare {
            context: context.as_bytes(),
            old: &old.public,
            receivers: &c.public,
            threshold: t_new as u32,
        };
        // Up to f dealers are bad, and never so many that fewer than t remain.
        let bad: Vec<usize> = (0..n)
            .filter(|_| rng.random_bool(0.4))
            .take(max_faulty(n).min(n - t))
            .collect();
        let one = Scalar::from_u64(1);
        let dealings: Vec<ReshareDealing> = old
            .shares
            .iter()
            .map(|s| {
                if !bad.contains(&(s.index as usize)) {
                    return r.deal(s, &mut rng).expect("deal");
                }
                if rng.random_bool(0.5) {
                    // Reshares a secret of its own choosing.
                    let other = SecretShare {
                        index: s.index,
                        key: BlsSecretKey::generate(&mut rng),
                    };
                    r.deal(&other, &mut rng).expect("deal")
                } else {
                    // Gives one receiver a value off its polynomial.
                    let victim = rng.random_range(0..m);
                    r.deal_values(
                        s,
                        &mut rng,
                        |j, v| if j == victim { v.add(&one) } else { v },
                    )
                    .expect("deal")
                }
            })
            .collect();
        // What the complaint round will decide: a dealing is disqualified if the
        // public check or any receiver's check fails. Every bad one is.
        let qualified: Vec<&ReshareDealing> = dealings
            .iter()
            .filter(|d| {
                r.verify_public(d).is_ok()
                    && (0..m as u32).all(|j| r.open(d, j, &c.keys[j as usize]).is_ok())
            })
            .collect();
        for d in &qualified {
            assert!(
                !bad.contains(&(d.dealer as usize)),
                "case {case}: bad dealer {} qualified",
                d.dealer
            );
        }
        let chosen_ids = r
            .choose(qualified.iter().map(|d| d.dealer))
            .expect("t honest dealers");
        let chosen: Vec<&ReshareDealing> = qualified
            .iter()
            .copied()
            .filter(|d| chosen_ids.contains(&d.dealer))
            .collect();
        let public = r.public_key(&chosen).expect("public key");
        assert_eq!(public.group_key, old.public.group_key, "case {case}");
        let shares = reshared(&r, &c, qualified.iter().copied());
        for s in &shares {
            assert_eq!(
                s.key.public_key(),
                public.share_keys[s.index as usize],
                "case {case}"
            );
        }
        // The last t' new members sign for the genesis key.
        let sig: Vec<SignatureShare> = shares[m - t_new..].iter().map(|s| s.sign(D, MSG)).collect();
        old.public
            .verify(D, MSG, &public.combine(&sig).expect("combine"))
            .unwrap_or_else(|e| panic!("case {case} (n {n}, t {t}, m {m}, t' {t_new}): {e}"));
    }
}

#[test]
fn bad_dealings_are_caught() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let old = deal(4, 2, &mut rng).expect("deal");
    let c = committee(4, &mut rng);
    let r = Reshare {
        context: b"ctx",
        old: &old.public,
        receivers: &c.public,
        threshold: 2,
    };
    let good = r.deal(&old.shares[1], &mut rng).expect("deal");
    // A dealer resharing a value other than its share: its first commitment is not
    // its share key, and anyone sees it.
    let other = SecretShare {
        index: 1,
        key: old.shares[2].key.clone(),
    };
    let e = r
        .verify_public(&r.deal(&other, &mut rng).expect("deal"))
        .expect_err("caught");
    assert!(e.to_string().contains("first commitment"), "{e}");
    // A value off the committed polynomial, well encrypted: receiver 2 sees it, the
    // others open theirs.
    let one = Scalar::from_u64(1);
    let wrong = r
        .deal_values(&old.shares[1], &mut rng, |j, v| {
            if j == 2 { v.add(&one) } else { v }
        })
        .expect("deal");
    r.verify_public(&wrong).expect("nothing public is wrong");
    let e = r.open(&wrong, 2, &c.keys[2]).expect_err("caught");
    assert!(e.to_string().contains("commitments"), "{e}");
    r.open(&wrong, 3, &c.keys[3]).expect("opens");
    // A ciphertext moved from another dealing does not decrypt.
    let mut moved = good.clone();
    moved.ciphertexts[2] = wrong.ciphertexts[2].clone();
    let e = r.open(&moved, 2, &c.keys[2]).expect_err("caught");
    assert!(e.to_string().contains("does not decrypt"), "{e}");
    // A ciphertext tampered with, one of the wrong size, a missing one, or one for
    // another receiver: refused.
    let mut flipped = good.clone();
    flipped.ciphertexts[0][5] ^= 1;
    assert!(r.open(&flipped, 0, &c.keys[0]).is_err());
    let mut short = good.clone();
    short.ciphertexts[3].pop();
    assert!(r.verify_public(&short).is_err());
    let mut missing = good.clone();
    missing.ciphertexts.pop();
    assert!(r.verify_public(&missing).is_err());
    assert!(r.open(&good, 1, &c.keys[0]).is_err());
    // The same dealing in another context does not open.
    let elsewhere = Reshare {
        context: b"another resharing",
        ..r
    };
    assert!(elsewhere.open(&good, 0, &c.keys[0]).is_err());
    // Too few commitments (a lower degree than the threshold asks) or an unknown dealer.
    let mut low = good.clone();
    low.commitments.pop();
    assert!(r.verify_public(&low).is_err());
    let mut stranger = good.clone();
    stranger.dealer = 9;
    assert!(r.verify_public(&stranger).is_err());
    // The good one opens for everyone.
    for j in 0..4 {
        r.open(&good, j, &c.keys[j as usize]).expect("opens");
    }
}

#[test]
fn a_value_consistent_with_forged_commitments_is_refused_by_the_public_check() {
    // A dealer who commits to a polynomial through another secret, and encrypts
    // values on it, fails the public check (C_0 is not its share key) before anyone
    // decrypts anything.
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let old = deal(4, 2, &mut rng).expect("deal");
    let c = committee(4, &mut rng);
    let r = Reshare {
        context: b"ctx",
        old: &old.public,
        receivers: &c.public,
        threshold: 2,
    };
    let forged = SecretShare {
        index: 0,
        key: BlsSecretKey::generate(&mut rng),
    };
    let d = r.deal(&forged, &mut rng).expect("deal");
    assert!(r.verify_public(&d).is_err());
    assert!(r.open(&d, 0, &c.keys[0]).is_err());
    // And a public key from it would not keep the group key.
    let good = r.deal(&old.shares[1], &mut rng).expect("deal");
    assert!(r.public_key(&[&d, &good]).is_err());
}

#[test]
fn complaints_are_answered_in_the_clear_and_an_unanswered_or_wrong_answer_disqualifies() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let old = deal(4, 2, &mut rng).expect("deal");
    let c = committee(4, &mut rng);
    let r = Reshare {
        context: b"subnet 1, resharing at height 30",
        old: &old.public,
        receivers: &c.public,
        threshold: 3,
    };
    // A derived dealing is the same every time (after a crash, too).
    let honest = r.deal_derived(&old.shares[0]).expect("deal");
    assert_eq!(r.deal_derived(&old.shares[0]).expect("deal"), honest);
    let other = Reshare {
        context: b"another resharing",
        ..r
    };
    assert_ne!(other.deal_derived(&old.shares[0]).expect("deal"), honest);
    // Dealer 1 encrypts a value off its polynomial to receiver 2.
    let one = Scalar::from_u64(1);
    let bad = r
        .deal_values(
            &old.shares[1],
            &mut r.dealer_rng(&old.shares[1]).expect("rng"),
            |j, v| if j == 2 { v.add(&one) } else { v },
        )
        .expect("deal");
    assert!(r.open(&bad, 2, &c.keys[2]).is_err(), "receiver 2 complains");
    let dealings = [&honest, &bad];
    let complaint = [(1, 2)];
    // Unanswered: dealer 1 is out.
    assert_eq!(r.qualified(&dealings, &complaint, &[]), vec![0]);
    // Answered with a value off the commitments: still out.
    let true_answer = r.justify(&old.shares[1], 2).expect("justify");
    let mut wrong = true_answer.clone();
    wrong.value = Scalar::from_be_bytes(&wrong.value).add(&one).to_be_bytes();
    assert!(r.check_justification(&bad, &wrong).is_err());
    assert_eq!(r.qualified(&dealings, &complaint, &[wrong]), vec![0]);
    // An answer for another receiver, or naming another dealer, answers nothing.
    let elsewhere = r.justify(&old.shares[1], 3).expect("justify");
    assert_eq!(
        r.qualified(&dealings, &complaint, std::slice::from_ref(&elsewhere)),
        vec![0]
    );
    let mut misnamed = true_answer.clone();
    misnamed.dealer = 0;
    assert!(r.check_justification(&bad, &misnamed).is_err());
    // Answered with the dealt value: dealer 1 stays, and receiver 2 uses that value.
    assert_eq!(
        r.qualified(&dealings, &complaint, std::slice::from_ref(&true_answer)),
        vec![0, 1]
    );
    // A false complaint about an honest dealer costs it one public answer.
    let false_complaint = [(0, 3), (1, 2)];
    let answers = [
        r.justify(&old.shares[0], 3).expect("justify"),
        true_answer.clone(),
    ];
    assert_eq!(
        r.qualified(&dealings, &false_complaint, &answers),
        vec![0, 1]
    );
    // Every receiver's share from the two dealings signs with the same group key.
    let shares: Vec<SecretShare> = (0..4u32)
        .map(|j| {
            let opened: Vec<OpenedValue> = dealings
                .iter()
                .map(|d| {
                    r.open(d, j, &c.keys[j as usize]).unwrap_or_else(|_| {
                        assert_eq!((d.dealer, j), (1, 2), "only the planted value fails");
                        r.check_justification(d, &true_answer).expect("answer")
                    })
                })
                .collect();
            r.combine(j, &opened).expect("combine")
        })
        .collect();
    let public = r.public_key(&dealings).expect("public key");
    let sigs: Vec<SignatureShare> = shares[1..].iter().map(|s| s.sign(D, MSG)).collect();
    old.public
        .verify(D, MSG, &public.combine(&sigs).expect("combine"))
        .expect("the group key signs");
}
