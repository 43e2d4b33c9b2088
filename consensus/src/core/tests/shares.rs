//! Optimistic share verification (`combine`): shares from their own signer are pooled
//! unchecked and checked in their combination; relayed ones are checked on arrival.

use super::*;

/// Replaces a share's signature with a valid-looking one that does not verify for its
/// signer (another message's, so it still decodes as a BLS signature).
pub(super) fn spoil(a: &mut Artifact) {
    let wrong = |s: &mut Vec<u8>| {
        let key = BlsSecretKey::generate(&mut ChaCha20Rng::seed_from_u64(7));
        *s = key
            .sign(domain::NOTARIZATION, b"something else")
            .to_bytes()
            .to_vec();
    };
    match a {
        Artifact::NotarizationShare(s) | Artifact::FinalizationShare(s) => wrong(&mut s.signature),
        Artifact::BeaconShare(s) | Artifact::CertificationShare(s) | Artifact::CupShare(s) => {
            wrong(&mut s.signature)
        }
        _ => {}
    }
}

#[test]
fn a_member_sending_bad_shares_in_its_own_name_costs_a_check_per_share_and_stops_nothing() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.bad_shares[3] = true;
    net.settle();
    for _ in 0..10 {
        net.advance(150 * MS);
    }
    let mut fallbacks = 0;
    for i in 0..3 {
        let st = net.cores[i].stats();
        assert!(
            net.cores[i].finalized_height() >= Height::new(3),
            "node {i}: {st:?}"
        );
        assert_eq!(st.critical_errors, 0, "node {i}: {st:?}");
        // Every fallback found node 3's share bad: nothing else was counted invalid.
        assert!(
            st.invalid_artifacts >= st.share_fallbacks,
            "node {i}: {st:?}"
        );
        fallbacks += st.share_fallbacks;
        // Its bad shares never made it into a combination.
        for p in net.cores[i].pool.values() {
            for g in p.notarizations.values().chain(p.finalization.as_ref()) {
                assert!(!g.signers.contains(&3), "node {i}: {g:?}");
            }
        }
    }
    assert!(
        fallbacks > 0,
        "node 3's shares were never in a first combination"
    );
}

#[test]
fn a_share_relayed_in_someone_elses_name_is_checked_on_arrival_and_takes_no_slot() {
    let mut net = Net::new(4, &[WALL; 4]);
    let (h, hash) = (Height::new(1), CryptoHash([9; 32]));
    let m = net.cores[0].msg(&(h, hash));
    let share = |net: &Net, signer: NodeIndex, by: usize| Share {
        height: h,
        hash,
        signer,
        signature: net.cores[by].crypto.sign_multi(domain::NOTARIZATION, &m),
    };
    let now = net.clocks[0];
    // Node 1 sends a share in node 2's name (signed by itself): refused at once.
    let forged = share(&net, 2, 1);
    net.deliver(0, 1, now, Artifact::NotarizationShare(forged));
    let held = |net: &Net| {
        net.cores[0]
            .pool
            .get(&h)
            .and_then(|p| p.notar_shares.get(&hash))
            .map(|m| m.keys().copied().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(net.cores[0].stats().invalid_artifacts, 1);
    assert_eq!(held(&net), Vec::<NodeIndex>::new());
    // Node 2's own share then takes its place, pooled without a check of its own.
    let real = share(&net, 2, 2);
    net.deliver(0, 2, now, Artifact::NotarizationShare(real));
    assert_eq!(held(&net), vec![2]);
    assert_eq!(net.cores[0].stats().invalid_artifacts, 1);
}

#[test]
fn a_share_in_this_nodes_own_name_from_anyone_else_is_dropped() {
    // A Byzantine member replays node 0's own (valid) share to it. Pooled, it would be
    // re-sent by node 0 as its own without ever having been persisted by it, and it
    // would stand in for the share node 0 means to make.
    let mut net = Net::new(4, &[WALL; 4]);
    let (h, hash) = (Height::new(1), CryptoHash([9; 32]));
    let m = net.cores[0].msg(&(h, hash));
    let mine = Share {
        height: h,
        hash,
        signer: 0,
        signature: net.cores[0].crypto.sign_multi(domain::NOTARIZATION, &m),
    };
    let now = net.clocks[0];
    let before = net.cores[0].stats().redundant_artifacts;
    net.deliver(0, 3, now, Artifact::NotarizationShare(mine));
    assert_eq!(net.cores[0].stats().redundant_artifacts, before + 1);
    assert!(
        net.cores[0]
            .pool
            .get(&h)
            .and_then(|p| p.notar_shares.get(&hash))
            .is_none(),
        "a replayed share took this node's own slot"
    );
}
