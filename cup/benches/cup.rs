//! CUP verification: decode the file bytes and check the threshold signature.
// A benchmark that cannot set up or whose check fails should stop loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use cup::Cup;
use std::hint::black_box;

fn verify(c: &mut Criterion) {
    let d = common::dealing(13, 9, 7);
    let cup = common::sign(&d, common::fixture_content(&d.public.group_key.to_bytes()));
    let bytes = Cup::Signed(cup).encode();
    let key = d.public.group_key;
    c.bench_function("cup/decode_and_verify", |b| {
        b.iter(|| {
            let Ok(Cup::Signed(cup)) = Cup::decode(black_box(&bytes)) else {
                panic!("decode")
            };
            cup.verify(&key).expect("valid")
        })
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);
