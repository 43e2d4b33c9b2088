//! What a block costs to execute as the state grows (a measurement, not a test: it
//! asserts nothing about time). Run it with
//! `cargo test -p replica --test execute_cost -- --ignored --nocapture`.
//!
//! Builds states of 10,000 and 100,000 small values, then times blocks of 1,000 puts of
//! 100-byte values (half overwrite, half new keys): the figure the state hash adds to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crypto::ed25519::Ed25519KeyPair;
use replica::{
    ingress::{Ingress, Operation, SignedIngress},
    state::ReplicatedState,
};
use std::time::Instant;
use types::{Height, NetworkId};

const T: u64 = 1_000_000_000_000;
/// The network the blocks' updates are for (no registry here: any id will do).
const NET: NetworkId = NetworkId([1; 32]);

fn put(user: &Ed25519KeyPair, nonce: u64, key: String) -> SignedIngress {
    SignedIngress::sign(
        Ingress {
            network: NET,
            sender: user.public_key(),
            nonce,
            expiry_ns: T + 60_000_000_000,
            operation: Operation::Put {
                key,
                value: vec![(nonce % 251) as u8; 100],
            },
        },
        user,
    )
}

#[test]
#[ignore = "a measurement; run by hand"]
fn execute_cost_per_block_as_the_state_grows() {
    let user = Ed25519KeyPair::from_seed(&[5; 32]);
    for values in [10_000u64, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ReplicatedState::open(dir.path()).unwrap();
        let mut h = 0;
        let mut nonce = 0;
        let blocks: Vec<Vec<SignedIngress>> = (0..values / 1000)
            .map(|b| {
                (0..1000)
                    .map(|i| {
                        nonce += 1;
                        put(&user, nonce, format!("k{:08}", b * 1000 + i))
                    })
                    .collect()
            })
            .collect();
        for b in &blocks {
            h += 1;
            s.execute(Height::new(h), T, &NET, b).unwrap();
        }
        let mut ms = Vec::new();
        for round in 0..5u64 {
            let block: Vec<SignedIngress> = (0..1000u64)
                .map(|i| {
                    nonce += 1;
                    let key = if i % 2 == 0 {
                        format!("k{:08}", (round * 7919 + i * 31) % values)
                    } else {
                        format!("n{round}-{i}")
                    };
                    put(&user, nonce, key)
                })
                .collect();
            h += 1;
            let start = Instant::now();
            s.execute(Height::new(h), T, &NET, &block).unwrap();
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        let start = Instant::now();
        drop(s);
        let s = ReplicatedState::open(dir.path()).unwrap();
        let open_ms = start.elapsed().as_secs_f64() * 1e3;
        println!(
            "state of {values} values: a block of 1,000 puts executes in {:.1} ms (median of 5); reopening takes {open_ms:.1} ms; height {}",
            ms[2],
            s.height()
        );
    }
}
