//! The migration ahead of the halt: a copy migrated at an earlier height, brought up to
//! the state at the CUP, is the state a full migration at the CUP gives (same hash, same
//! values, a consistent index), whatever changed in between: new keys, overwritten and
//! deleted ones, expired replay entries purged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crypto::ed25519::Ed25519KeyPair;
use rand::{Rng, SeedableRng};
use release::{
    ingress::{Ingress, Operation, SignedIngress},
    state::ReplicatedState,
};
use replica_next as release;
use std::path::Path;
use types::{Height, NetworkId};

#[path = "../../replica/tests/compat_checks/mod.rs"]
mod compat_checks;

const SECOND: u64 = 1_000_000_000;

/// `blocks` blocks of random puts and deletes over 200 keys, at `time`.
fn run(
    state: &mut ReplicatedState,
    network: &NetworkId,
    rng: &mut rand_chacha::ChaCha8Rng,
    blocks: usize,
    time: u64,
) {
    for _ in 0..blocks {
        let block: Vec<SignedIngress> = (0..rng.random_range(1..40))
            .map(|_| {
                let user = Ed25519KeyPair::from_seed(&[rng.random_range(0..4u8); 32]);
                let key = format!("k{}", rng.random_range(0..200));
                let operation = if rng.random_bool(0.2) {
                    Operation::Delete { key }
                } else {
                    Operation::Put {
                        key,
                        value: vec![rng.random(); rng.random_range(0..64)],
                    }
                };
                SignedIngress::sign(
                    Ingress {
                        network: *network,
                        sender: user.public_key(),
                        nonce: rng.random(),
                        expiry_ns: time + 60 * SECOND,
                        operation,
                    },
                    &user,
                )
            })
            .collect();
        let h = state.height().increment();
        state.execute(h, time, network, &block).expect("execute");
    }
}

fn checkpoint(state: &ReplicatedState, at: &Path) -> ReplicatedState {
    state.checkpoint(at).expect("checkpoint");
    ReplicatedState::copy(at, &at.with_extension("open")).expect("open checkpoint")
}

#[test]
fn a_copy_migrated_ahead_and_brought_up_to_the_cup_is_the_full_migration_there() {
    let f = compat_checks::read(1);
    for seed in 0..6u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // The old release's state (schema 1), executed on by this release's code.
        let mut live = compat_checks::open_checkpoint(&f, 1, &dir.path().join("fixture"));
        let t0 = 1_000 * SECOND;
        run(&mut live, &f.network, &mut rng, 20, t0);

        // The preflight: a copy of a checkpoint, migrated, kept.
        let base = checkpoint(&live, &dir.path().join("base"));
        drop(base);
        let mut ahead = ReplicatedState::copy(&dir.path().join("base"), &dir.path().join("ahead"))
            .expect("copy");
        assert!(ahead.migrate_keeping_base().expect("migrate") > 0);
        ahead.flush().expect("flush");

        // The subnet goes on in the old schema until the CUP: later blocks, some of them
        // after the first ones' replay entries expired (seed 0: nothing changes).
        let later = if seed == 0 {
            0
        } else {
            rng.random_range(1..30)
        };
        run(&mut live, &f.network, &mut rng, later, t0 + 120 * SECOND);
        let at_cup = checkpoint(&live, &dir.path().join("cup"));
        let mut full =
            ReplicatedState::copy(&dir.path().join("cup"), &dir.path().join("full")).expect("copy");
        full.migrate().expect("full migration");

        let report = ahead.advance_migrated(&at_cup).expect("advance");
        assert_eq!(report.from, Height::new(f.checkpoint.height + 20));
        if seed == 0 {
            assert_eq!((report.buckets, report.entries), (0, 0));
        } else {
            assert!(report.buckets > 0, "seed {seed}: nothing was rewritten");
        }
        assert_eq!(ahead.height(), at_cup.height(), "seed {seed}");
        assert_eq!(ahead.schema(), full.schema());
        assert_eq!(ahead.state_hash(), full.state_hash(), "seed {seed}");
        assert_eq!(
            ahead.recompute_hash().expect("recompute"),
            ahead.state_hash()
        );
        for k in 0..200 {
            let key = format!("k{k}");
            assert_eq!(ahead.get(&key).expect("get"), full.get(&key).expect("get"));
        }
        // Used once: the copy no longer knows a base.
        assert!(ahead.advance_migrated(&at_cup).is_err());
    }
}

#[test]
fn a_copy_is_refused_by_a_state_it_cannot_follow() {
    let f = compat_checks::read(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let live = compat_checks::open_checkpoint(&f, 1, &dir.path().join("fixture"));
    // A migrated state without a base (a full migration's) is no copy to advance.
    let mut full = checkpoint(&live, &dir.path().join("cp"));
    full.migrate().expect("migrate");
    let e = full.advance_migrated(&live).expect_err("no base");
    assert!(e.to_string().contains("not a migrated copy"), "{e}");
    // A copy cannot follow a state already in the new schema.
    let mut ahead = checkpoint(&live, &dir.path().join("cp2"));
    ahead.migrate_keeping_base().expect("migrate");
    let before = ahead.state_hash();
    let e = ahead.advance_migrated(&full).expect_err("newer schema");
    assert!(e.to_string().contains("cannot follow"), "{e}");
    assert_eq!(
        ahead.state_hash(),
        before,
        "a refused advance changed the copy"
    );
}
