//! Compatibility, the next release's side: it reads every golden fixture of the first
//! release (CUPs, registry changes, signed ingress and the carry-over file, envelopes
//! as the old pool store keeps them, a schema-1 checkpoint which it then migrates,
//! `node.toml`) and its own, and writes its own again byte for byte. The first
//! release's wire protocol it must refuse: releases never mix artifacts. The fixtures
//! and their writer: `replica::compat`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use replica_next as release;

#[path = "../../replica/tests/compat_checks/mod.rs"]
mod compat_checks;

use compat_checks::*;
use release::{compat, state::value_checksum};

/// `node.toml` as the orchestrator parses it (the owner of the format), naming the
/// network the replica reads from it.
fn check_node_toml(f: &compat::Fixtures) {
    let config = orchestrator::config::NodeConfig::parse(&f.node_toml).expect("node.toml");
    let key = config.root_key().expect("root key");
    assert_eq!(
        types::NetworkId::from_registry_root_key(key.as_bytes()),
        f.network
    );
    assert_eq!(config.registry_urls.len(), 2);
    assert_eq!(config.poll_interval_ms, 300);
    assert_eq!(config.webhooks.len(), 1);
    assert!(config.tls_extra_ca_file.is_some());
}

#[test]
fn the_next_release_reads_every_fixture_of_the_first() {
    let f = read(1);
    check_set(&f, 1);
    check_updates_validate(&f, 1);
    check_node_toml(&f);
    // The old release's pool store decodes (`read` checked every kind); its wire bytes
    // are another protocol's.
    for (kind, e) in &f.wire {
        assert!(
            e.is_err(),
            "icup-consensus/1 bytes decoded as {kind}: {e:?}"
        );
    }
    // The schema-1 checkpoint opens as it is, then migrates to schema 2 in place.
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut state = open_checkpoint(&f, 1, scratch.path());
    assert_eq!(state.schema(), 1);
    let before = state.state_hash();
    assert_eq!(state.migrate().expect("migrate"), 3);
    assert_eq!(
        (state.schema(), state.height().get()),
        (2, f.checkpoint.height)
    );
    assert_ne!(state.state_hash(), before);
    assert_eq!(
        state.recompute_hash().expect("recompute"),
        state.state_hash()
    );
    for (key, value) in &f.checkpoint.values {
        let value = hex::decode(value).expect("hex");
        assert_eq!(
            state.get_stored(key).expect("get"),
            Some((value.clone(), Some(value_checksum(&value)))),
            "{key}"
        );
    }
}

#[test]
fn the_next_release_reads_its_own_fixtures() {
    let f = read(2);
    check_set(&f, 2);
    check_updates_validate(&f, 2);
    check_node_toml(&f);
    for (kind, e) in &f.wire {
        assert_eq!(e.as_ref(), Ok(&f.pool[kind]), "{kind}");
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let state = open_checkpoint(&f, 2, scratch.path());
    assert_eq!(state.schema(), 2);
}

#[test]
fn the_next_release_writes_its_committed_fixtures_again() {
    check_regenerated_set_is_committed();
}
