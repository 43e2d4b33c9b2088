//! Deterministic CUPs for tests, fixtures and benchmarks.
#![allow(dead_code)]

use crypto::threshold::{Dealing, deal};
use cup::{CupContent, RandomBeacon, SignedCup};
use rand::SeedableRng;
use std::{collections::BTreeMap, path::PathBuf};
use types::{CryptoHash, Height, RegistryVersion, ReplicaVersion, SubnetId, domain};

pub fn fixtures_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures")
}

pub fn dealing(n: usize, t: usize, seed: u64) -> Dealing {
    deal(n, t, &mut rand_chacha::ChaCha20Rng::seed_from_u64(seed)).expect("deal")
}

/// The content of the committed `signed.cup` fixture, given the subnet key it is for.
pub fn fixture_content(group_key_bytes: &[u8]) -> CupContent {
    CupContent {
        subnet_id: SubnetId::from_threshold_public_key(group_key_bytes),
        height: Height::new(100),
        block_hash: CryptoHash::of(domain::BLOCK_HASH, b"fixture summary block 100"),
        block_time_ns: 1_795_000_000_000_000_000,
        registry_version: RegistryVersion::new(7),
        replica_version: ReplicaVersion::new("0.1.0").expect("valid"),
        random_beacon: RandomBeacon(vec![0xab; 96]),
        state_hash: CryptoHash::of(domain::STATE_HASH, b"fixture state at 100"),
        oldest_registry_version_in_use: RegistryVersion::new(5),
        next_replica_version: None,
        committee: None,
        extensions: BTreeMap::new(),
    }
}

/// Signs `content` with the first `t` shares of `dealing`.
pub fn sign(dealing: &Dealing, content: CupContent) -> SignedCup {
    let t = dealing.public.threshold as usize;
    let shares: Vec<_> = dealing.shares[..t]
        .iter()
        .map(|s| SignedCup::sign_share(&content, s))
        .collect();
    SignedCup::combine(content, &dealing.public, &shares).expect("combine")
}

/// This crate's directory, read when the test runs: a target directory shared between
/// clones can hold a test binary built in another clone, so a path baked in at compile
/// time (`env!`) may point at a directory that is gone.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
