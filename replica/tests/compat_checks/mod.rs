//! The checks both releases run on a fixture set (`replica/tests/compat.rs` for the first
//! release, `replica-next/tests/compat.rs` for the next): what every set holds, whichever
//! release reads it. The test file names this build's library `release`.
#![allow(dead_code)]

use crate::release::{
    compat::{self, Fixtures, files},
    ingress::{IngressError, Operation, Validate, decode_payload},
    state::ReplicatedState,
};
use cup::{Cup, RegistryCupKind};
use registry::records::CupContentsKind;
use std::path::{Path, PathBuf};
use types::{Height, RegistryVersion};

/// The committed set of `release`, read from the source tree when the test runs.
pub fn set(release: u32) -> PathBuf {
    let here = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    // `replica/` or `replica-next/`: the sets live under `replica/`.
    here.parent()
        .unwrap_or(&here)
        .join("replica/tests/fixtures")
        .join(format!("release-{release}"))
}

pub fn read(release: u32) -> Fixtures {
    let dir = set(release);
    compat::read(&dir).unwrap_or_else(|e| {
        panic!(
            "release {} cannot read release {release}'s fixtures in {}: {e}",
            compat::RELEASE_NUMBER,
            dir.display()
        )
    })
}

fn bytes(release: u32, name: &str) -> Vec<u8> {
    std::fs::read(set(release).join(name)).expect("fixture")
}

/// What every set of `release` holds, as any release reads it.
pub fn check_set(f: &Fixtures, release: u32) {
    let version = compat::release_version(release);
    let next = compat::release_version(2);
    let h = compat::cup_height(release);

    // The signed CUP: verified (by `read`), every field, and the same bytes written back.
    let c = f.signed_cup.content();
    assert_eq!(c.height, h);
    assert_eq!(c.replica_version, version);
    assert_eq!(c.next_replica_version.as_ref(), Some(&next));
    assert_eq!(c.registry_version, compat::DEPLOY_REGISTRY_VERSION);
    assert_eq!(c.block_time_ns, compat::block_time_ns(h.get()));
    assert_eq!(c.state_hash.to_hex(), f.checkpoint.state_hash);
    assert!(c.extensions.is_empty(), "{:?}", c.extensions);
    assert_eq!(
        Cup::Signed(f.signed_cup.clone()).encode(),
        bytes(release, files::SIGNED_CUP)
    );

    // The genesis CUP: no `next_replica_version`, and the one every node builds from
    // the registry the fixture's deltas make.
    let g = &f.genesis_cup;
    assert_eq!(g.kind, RegistryCupKind::Genesis);
    assert_eq!(g.content.height, Height::ZERO);
    assert_eq!(g.content.next_replica_version, None);
    assert_eq!(g.content.replica_version, compat::release_version(1));
    assert_eq!(g.content.state_hash, types::empty_state_hash());
    let subnet = g.content.subnet_id;
    let rebuilt =
        registry::local::registry_cup(&f.registry, &subnet, RegistryVersion::new(1)).expect("cup");
    assert_eq!(&rebuilt, g);
    assert_eq!(
        Cup::Registry(g.clone()).encode(),
        bytes(release, files::GENESIS_CUP)
    );

    // Registry: three versions, every record type, each record written back unchanged.
    assert_eq!(f.changes.latest_version, compat::DEPLOY_REGISTRY_VERSION);
    let versions: Vec<u64> = f.changes.deltas.iter().map(|d| d.version.get()).collect();
    assert_eq!(versions, [1, 2, 3]);
    let s = &f.snapshot;
    assert_eq!(s.nodes.len(), 4);
    assert_eq!(s.neurons.len(), 2);
    assert_eq!(
        s.versions.keys().cloned().collect::<Vec<_>>(),
        [compat::release_version(1), next.clone()]
    );
    assert_eq!(
        s.subnet_list.as_ref().map(|l| l.subnets.clone()),
        Some(vec![subnet])
    );
    let record = &s.subnets[&subnet];
    assert_eq!(record.replica_version, next);
    assert_eq!(record.members.len(), 4);
    assert_eq!(record.dkg_interval_length, compat::DKG_INTERVAL_LENGTH);
    assert_eq!(record.high_threshold_key.group_key, f.subnet_key);
    assert_eq!(s.cup_contents[&subnet].kind, CupContentsKind::Genesis);
    assert_eq!(s.versions[&next].release_package_urls.len(), 2);
    let at =
        registry::local::subnet_at(&f.registry, &subnet, f.changes.latest_version).expect("subnet");
    assert_eq!(at.members.len(), 4);
    for (key, value) in
        registry::store::RegistryStore::latest_snapshot(&f.registry).expect("snapshot")
    {
        assert_eq!(reencode(&key, &value), value, "{key}");
    }

    // Signed ingress and the carry-over: the network node.toml names, and every update
    // signed for it.
    assert_eq!(f.network, compat::network_id());
    assert_eq!(f.update.ingress.network, f.network);
    assert_eq!(f.update, compat::sample_update(release));
    assert_eq!(f.carried.len(), if release >= 2 { 3 } else { 2 });
    assert_eq!(f.carried[0].ingress.operation.key(), Some("carried"));

    // Envelopes as the pool store keeps them: every kind, this release's version.
    let kinds: Vec<&str> = compat::sample_artifacts(release)
        .iter()
        .map(|a| a.kind())
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort_unstable();
    assert_eq!(
        f.pool.keys().map(String::as_str).collect::<Vec<_>>(),
        sorted
    );
    for (kind, e) in &f.pool {
        assert_eq!(e.version, version, "{kind}");
        assert_eq!(e.artifact.kind(), kind);
        assert_eq!(e.artifact.height(), h.increment(), "{kind}");
    }
    let consensus::artifact::Artifact::Proposal(p) = &f.pool["proposal"].artifact else {
        panic!("not a proposal")
    };
    let payload = decode_payload(&p.block.payload, 1 << 20).expect("payload");
    assert_eq!(payload, std::slice::from_ref(&f.update));
    assert_eq!(
        p.block.ready[0].version,
        compat::release_version(release + 1)
    );
    assert_eq!(f.wire.len(), f.pool.len());
}

/// A registry value decoded as its family's record and encoded again.
fn reencode(key: &str, value: &[u8]) -> Vec<u8> {
    use registry::records::{keys, *};
    fn again<R: RegistryRecord>(v: &[u8]) -> Vec<u8> {
        R::decode_value(v).expect("record").encode_value()
    }
    if key == keys::SUBNET_LIST {
        again::<SubnetListRecord>(value)
    } else if key.starts_with(keys::SUBNET_RECORD_PREFIX) {
        again::<SubnetRecord>(value)
    } else if key.starts_with(keys::REPLICA_VERSION_PREFIX) {
        again::<ReplicaVersionRecord>(value)
    } else if key.starts_with(keys::NODE_RECORD_PREFIX) {
        again::<NodeRecord>(value)
    } else if key.starts_with(keys::CUP_CONTENTS_PREFIX) {
        again::<CupContentsRecord>(value)
    } else if key.starts_with(keys::NEURON_PREFIX) {
        again::<NeuronRecord>(value)
    } else {
        panic!("a key of no known family: {key}")
    }
}

/// Whether this release executes the updates of `f` (validated at the time they were
/// accepted, on their network): the append method only from the next release on.
pub fn check_updates_validate(f: &Fixtures, release: u32) {
    let now = compat::ingress_time_ns(release);
    for m in std::iter::once(&f.update).chain(&f.carried) {
        let expected = match &m.ingress.operation {
            Operation::Append { .. } if compat::RELEASE_NUMBER < 2 => {
                Err(IngressError::UnsupportedMethod("append"))
            }
            _ => Ok(()),
        };
        assert_eq!(m.validate(now, &f.network), expected, "{m:?}");
    }
}

/// The set's checkpoint, opened (a copy) with this release's code, as `checkpoint.json`
/// describes it; the state is returned for migration.
pub fn open_checkpoint(f: &Fixtures, release: u32, scratch: &Path) -> ReplicatedState {
    let state = compat::open_checkpoint(&set(release), scratch).expect("checkpoint opens");
    let c = &f.checkpoint;
    assert_eq!(state.height().get(), c.height);
    assert_eq!(state.schema(), c.schema);
    assert_eq!(state.state_hash().to_hex(), c.state_hash);
    assert_eq!(
        state.recompute_hash().expect("recompute"),
        state.state_hash()
    );
    assert_eq!(
        compat::CheckpointSummary::of(&state, compat::SAMPLE_KEYS).expect("summary"),
        *c
    );
    state
}

/// Writes this release's set again and compares it with the committed one: every file
/// of the `MANIFEST` (and the manifest) byte for byte, and what the checkpoint holds.
pub fn check_regenerated_set_is_committed() {
    let release = compat::RELEASE_NUMBER;
    let dir = tempfile::tempdir().expect("tempdir");
    compat::write_fixtures(dir.path()).expect("write");
    let committed = set(release);
    let manifest = std::fs::read_to_string(committed.join(files::MANIFEST)).expect("manifest");
    let mut names: Vec<&str> = manifest
        .lines()
        .map(|l| l.split_once("  ").expect("sum  name").1)
        .collect();
    names.push(files::MANIFEST);
    let fresh = std::fs::read_to_string(dir.path().join(files::MANIFEST)).expect("manifest");
    for name in names {
        let old = std::fs::read(committed.join(name)).expect("committed file");
        let new = std::fs::read(dir.path().join(name)).unwrap_or_default();
        assert!(
            old == new,
            "release-{release}/{name} is not what this release writes: a format changed. \
             If on purpose, run scripts/write-fixtures.sh and commit the new set \
             (the previous release's set must still decode).\nnew MANIFEST:\n{fresh}"
        );
    }
    assert_eq!(manifest, fresh);
}
