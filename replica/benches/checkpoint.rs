//! Checkpoint cost against state size: a RocksDB checkpoint is hard links (plus a
//! memtable flush), so its time should follow the block's writes, not the state's size.
//!
//! `cargo bench -p replica --bench checkpoint` (or `scripts/bench-checkpoint.sh`): builds
//! a state of about 1 MiB and one of about 1 GiB, then, ten times each, executes a small
//! block and times one checkpoint. Prints one Markdown table row per size.

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
const VALUE_BYTES: usize = 64 * 1024;

fn put(user: &Ed25519KeyPair, nonce: u64, key: String, value: Vec<u8>) -> SignedIngress {
    SignedIngress::sign(
        Ingress {
            network: NET,
            sender: user.public_key(),
            nonce,
            expiry_ns: T + 60_000_000_000,
            operation: Operation::Put { key, value },
        },
        user,
    )
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|es| {
            es.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Returns (state bytes on disk, checkpoint times in ms).
fn measure(total_bytes: usize) -> (u64, Vec<f64>) {
    let root = tempfile::tempdir().unwrap();
    let mut s = ReplicatedState::open(&root.path().join("state")).unwrap();
    let user = Ed25519KeyPair::from_seed(&[5; 32]);
    let mut nonce = 0;
    let mut h = 0;
    let values = total_bytes / VALUE_BYTES;
    // Pseudo-random values, so compression cannot shrink the state.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut value = || {
        (0..VALUE_BYTES)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
    };
    for chunk in (0..values).collect::<Vec<_>>().chunks(128) {
        let block: Vec<SignedIngress> = chunk
            .iter()
            .map(|i| {
                nonce += 1;
                put(&user, nonce, format!("k{i:08}"), value())
            })
            .collect();
        h += 1;
        s.execute(Height::new(h), T, &NET, &block).unwrap();
    }
    let mut times = Vec::new();
    for round in 0..10 {
        let block: Vec<SignedIngress> = (0..10)
            .map(|i| {
                nonce += 1;
                put(
                    &user,
                    nonce,
                    format!("w{round}-{i}"),
                    vec![round as u8; 1024],
                )
            })
            .collect();
        h += 1;
        s.execute(Height::new(h), T, &NET, &block).unwrap();
        let cp = root.path().join(format!("cp-{round}"));
        let start = Instant::now();
        s.checkpoint(&cp).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    (dir_bytes(&root.path().join("state")), times)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing else useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("| state | on disk | checkpoint median | min | max |");
    println!("|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (name, bytes) in [("1 MiB", 1usize << 20), ("1 GiB", 1usize << 30)] {
        let (disk, mut t) = measure(bytes);
        t.sort_by(|a, b| a.total_cmp(b));
        let median = t[t.len() / 2];
        medians.push(median);
        println!(
            "| {name} | {:.1} MiB | {median:.2} ms | {:.2} ms | {:.2} ms |",
            disk as f64 / (1 << 20) as f64,
            t[0],
            t[t.len() - 1]
        );
    }
    println!();
    println!("ratio 1 GiB / 1 MiB: {:.2}", medians[1] / medians[0]);
}
