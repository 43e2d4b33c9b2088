//! A core restarted with what it persisted: its own shares count again on the chain they
//! were made on, and not on a chain a recovery CUP started instead.

use super::*;

/// Core 0's first persisted artifact (its beacon share at height 1 on `genesis()`).
fn persisted_beacon_share(net: &mut Net) -> Envelope {
    let first: Vec<Action> = std::iter::from_fn(|| net.cores[0].poll_action()).collect();
    first
        .into_iter()
        .find_map(|a| match a {
            Action::Persist(e) if matches!(e.artifact, Artifact::BeaconShare(_)) => Some(e),
            _ => None,
        })
        .expect("a fresh core persists its beacon share")
}

fn own_beacon_shares(core: &mut Consensus<RealCrypto>) -> Vec<ThresholdShare> {
    std::iter::from_fn(|| core.poll_action())
        .filter_map(|a| match a {
            Action::Persist(Envelope {
                artifact: Artifact::BeaconShare(s),
                ..
            }) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn shares_persisted_before_a_recovery_cup_at_their_chains_height_do_not_stop_the_new_chain() {
    let mut net = Net::new(4, &[WALL; 4]);
    let old = persisted_beacon_share(&mut net);
    let now = Now {
        mono_ns: SEC,
        wall_ns: WALL,
    };
    let restart = |base: Base, net: &Net| {
        let crypto = net.cores[0].crypto().duplicate();
        Consensus::new(config(0, 4), crypto, base, registry(), [old.clone()], now).unwrap()
    };
    // The same chain: the share is its own again, and it signs no second one.
    let mut same = restart(genesis(), &net);
    assert!(own_beacon_shares(&mut same).is_empty());
    assert_eq!(same.stats().restored_from_another_chain, 0);

    // A recovery CUP at the same height replaced the chain (another block, another
    // beacon): the old share is not restored, and the node signs the new chain's.
    let recovery = Base {
        block_hash: CryptoHash([8; 32]),
        random_beacon: vec![9; 32],
        registry_version: RegistryVersion::new(1),
        ..genesis()
    };
    let mut recovered = restart(recovery, &net);
    let shares = own_beacon_shares(&mut recovered);
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(shares[0].value, vec![9; 32]);
    assert_eq!(recovered.stats().restored_from_another_chain, 1);
}
