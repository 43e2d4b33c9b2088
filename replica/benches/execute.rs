//! Execution cost per update, signatures aside: what a replica spends executing a block
//! of small puts once the ingress pool has checked their signatures (the throughput
//! load's shape: 16-byte values under fresh keys, many updates per sender).
//!
//! `cargo bench -p replica --bench execute [-- STATE_VALUES]`: fills a state with
//! STATE_VALUES values (default 200,000) in blocks of 1,000, then times 40 blocks of 500
//! new puts each, their signatures checked beforehand into the pool's memory. Prints the
//! median and the spread of microseconds per update.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crypto::ed25519::Ed25519KeyPair;
use replica::{
    ingress::{Ingress, Operation, SignedIngress, VerifiedSignatures},
    state::ReplicatedState,
};
use std::time::Instant;
use types::{Height, NetworkId};

const T: u64 = 1_000_000_000_000;
const NET: NetworkId = NetworkId([1; 32]);
const SENDERS: usize = 64;

fn put(user: &Ed25519KeyPair, nonce: u64, key: String) -> SignedIngress {
    SignedIngress::sign(
        Ingress {
            network: NET,
            sender: user.public_key(),
            nonce,
            expiry_ns: T + 60_000_000_000,
            operation: Operation::Put {
                key,
                value: nonce.to_be_bytes().repeat(2),
            },
        },
        user,
    )
}

fn main() {
    let values: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let root = tempfile::tempdir().unwrap();
    let mut s = ReplicatedState::open(&root.path().join("state")).unwrap();
    let users: Vec<Ed25519KeyPair> = (0..SENDERS)
        .map(|i| Ed25519KeyPair::from_seed(&[i as u8 + 1; 32]))
        .collect();
    let mut nonce = 0u64;
    // Keys spread over the whole key space, as users' random keys are.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next_key = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        format!("k{x:016x}")
    };
    let mut block = |n: usize| -> Vec<SignedIngress> {
        (0..n)
            .map(|i| {
                nonce += 1;
                put(&users[i % SENDERS], nonce, next_key())
            })
            .collect()
    };
    let mut verified = VerifiedSignatures::with_capacity(1 << 16);
    let mut h = 0;
    let fill = Instant::now();
    for _ in 0..values / 1000 {
        let b = block(1000);
        for m in &b {
            verified.verify(m).unwrap();
        }
        h += 1;
        let out = s
            .execute_with(Height::new(h), T + h, &NET, &b, &mut verified)
            .unwrap();
        assert_eq!(out.executed.len(), b.len(), "{} skipped", out.skipped);
    }
    eprintln!(
        "filled {} values in {:.1} s",
        values / 1000 * 1000,
        fill.elapsed().as_secs_f64()
    );
    let mut per_update_us = Vec::new();
    for _ in 0..40 {
        let b = block(500);
        for m in &b {
            verified.verify(m).unwrap();
        }
        h += 1;
        let t = Instant::now();
        let out = s
            .execute_with(Height::new(h), T + h, &NET, &b, &mut verified)
            .unwrap();
        assert_eq!(out.executed.len(), b.len());
        per_update_us.push(t.elapsed().as_secs_f64() * 1e6 / b.len() as f64);
    }
    per_update_us.sort_by(f64::total_cmp);
    let q = |p: f64| per_update_us[((per_update_us.len() - 1) as f64 * p) as usize];
    println!(
        "| executing a block of 500 puts at {} values | {:.1} µs per update (p10 {:.1}, p90 {:.1}) |",
        values,
        q(0.5),
        q(0.1),
        q(0.9)
    );
}
