//! Criterion benchmarks of the primitives consensus and CUPs depend on.
//! Run: `scripts/bench-crypto.sh` (writes the table in BENCHMARKS.md).
// A benchmark that cannot set up or whose check fails should stop loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crypto::{
    bls::{self, BlsSecretKey},
    ed25519::Ed25519KeyPair,
    threshold::{deal, high_threshold},
};
use rand::SeedableRng;
use std::hint::black_box;
use types::domain;

const MSG: &[u8] = &[7u8; 32];

fn ed25519(c: &mut Criterion) {
    let key = Ed25519KeyPair::from_seed(&[1; 32]);
    let pk = key.public_key();
    let sig = key.sign(domain::INGRESS, MSG);
    c.bench_function("ed25519/sign", |b| {
        b.iter(|| key.sign(domain::INGRESS, black_box(MSG)))
    });
    c.bench_function("ed25519/verify_strict", |b| {
        b.iter(|| pk.verify(domain::INGRESS, black_box(MSG), &sig))
    });
}

fn threshold_shares(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let d = deal(4, 3, &mut rng).expect("deal");
    let share = d.shares[0].sign(domain::CUP_CONTENT, MSG);
    c.bench_function("bls/share_sign", |b| {
        b.iter(|| d.shares[0].sign(domain::CUP_CONTENT, black_box(MSG)))
    });
    c.bench_function("bls/share_verify", |b| {
        b.iter(|| {
            d.public
                .verify_share(domain::CUP_CONTENT, black_box(MSG), &share)
        })
    });
}

fn combine(c: &mut Criterion) {
    let mut group = c.benchmark_group("bls/combine");
    for (n, t) in [(4, 3), (13, 9), (40, 27)] {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(n as u64);
        let d = deal(n, t, &mut rng).expect("deal");
        let shares: Vec<_> = d
            .shares
            .iter()
            .map(|s| s.sign(domain::CUP_CONTENT, MSG))
            .collect();
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("n{n}_t{t}")),
            &shares,
            |b, s| b.iter(|| d.public.combine(black_box(s)).expect("combine")),
        );
    }
    group.finish();
}

fn notarization(c: &mut Criterion) {
    let mut group = c.benchmark_group("bls/verify_notarization");
    for n in [4usize, 13, 40] {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(100 + n as u64);
        let keys: Vec<BlsSecretKey> = (0..n).map(|_| BlsSecretKey::generate(&mut rng)).collect();
        let signers = high_threshold(n);
        let pks: Vec<_> = keys[..signers].iter().map(|k| k.public_key()).collect();
        let sigs: Vec<_> = keys[..signers]
            .iter()
            .map(|k| k.sign(domain::NOTARIZATION, MSG))
            .collect();
        let agg = bls::aggregate(&sigs).expect("aggregate");
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("n{n}_signers{signers}")),
            &pks,
            |b, pks| {
                b.iter(|| {
                    bls::verify_aggregate(black_box(pks), domain::NOTARIZATION, MSG, &agg)
                        .expect("valid")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, ed25519, threshold_shares, combine, notarization);
criterion_main!(benches);
