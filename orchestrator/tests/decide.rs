//! Table tests for `decide`, on a real registry store (genesis + mutations) and real
//! threshold-signed CUPs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crypto::threshold::SignatureShare;
use cup::{Cup, CupContent, RandomBeacon, SignedCup};
use orchestrator::decide::{Decision, Local, decide};
use rand::SeedableRng;
use registry::{
    genesis::{GeneratedNetwork, NetworkParams, generate_network},
    records::{
        CupContentsKind, CupContentsRecord, RegistryRecord, ReplicaVersionRecord, SubnetRecord,
        keys,
    },
    store::{MemoryStore, Mutation, RegistryStore},
};
use types::{CryptoHash, Height, NodeId, RegistryVersion, ReplicaVersion, SubnetId};

fn v(s: &str) -> ReplicaVersion {
    ReplicaVersion::new(s).unwrap()
}

fn rv(n: u64) -> RegistryVersion {
    RegistryVersion::new(n)
}

/// The package hash the fixture elects a version with: genesis's for 1.0.0.
fn sha_of(version: &str) -> String {
    match version {
        "1.0.0" => "a".repeat(64),
        _ => "b".repeat(64),
    }
}

struct Fx {
    net: GeneratedNetwork,
    store: MemoryStore,
}

fn network(seed: u64) -> GeneratedNetwork {
    let params = NetworkParams {
        nodes: 4,
        neurons: 1,
        dkg_interval_length: 9,
        unit_delay_ms: 200,
        initial_notary_delay_ms: 100,
        base_port: 20000,
        replica_version: v("1.0.0"),
        package_sha256: "a".repeat(64),
        package_urls: vec!["http://127.0.0.1:9/1.tar.gz".into()],
        genesis_time_ns: 1_000,
    };
    generate_network(&params, &mut rand_chacha::ChaCha20Rng::seed_from_u64(seed)).unwrap()
}

impl Fx {
    fn new() -> Self {
        let net = network(1);
        let mut store = MemoryStore::new();
        store.apply(&net.genesis.mutations()).unwrap();
        Self { net, store }
    }

    fn subnet(&self) -> SubnetId {
        self.net.genesis.subnets[0].subnet_id
    }

    fn node(&self, i: usize) -> NodeId {
        self.net.nodes[i].record.node_id
    }

    /// Node `i` running `running` from the package the fixture elects it with.
    fn local(&self, i: usize, running: &str, cup: Option<Cup>) -> Local {
        Local {
            node_id: self.node(i),
            running_version: v(running),
            running_package_sha256: sha_of(running),
            cup,
        }
    }

    fn subnet_record(&self) -> SubnetRecord {
        let latest = self.store.latest_version();
        SubnetRecord::decode_value(
            &self
                .store
                .get(&keys::subnet_record(&self.subnet()), latest)
                .unwrap()
                .unwrap(),
        )
        .unwrap()
    }

    fn update_subnet(&mut self, f: impl FnOnce(&mut SubnetRecord)) -> RegistryVersion {
        let mut r = self.subnet_record();
        f(&mut r);
        self.apply(vec![Mutation::Update {
            key: keys::subnet_record(&self.subnet()),
            value: r.encode_value(),
        }])
    }

    fn apply(&mut self, m: Vec<Mutation>) -> RegistryVersion {
        self.store.apply(&m).unwrap()
    }

    /// Elects and deploys `version` to the subnet; returns the deploying registry version.
    fn deploy(&mut self, version: &str) -> RegistryVersion {
        self.deploy_package(version, &sha_of(version))
    }

    /// Elects `version` with the package `sha256` and deploys it.
    fn deploy_package(&mut self, version: &str, sha256: &str) -> RegistryVersion {
        let record = ReplicaVersionRecord {
            version: v(version),
            release_package_sha256_hex: sha256.to_string(),
            release_package_urls: vec!["http://127.0.0.1:9/2.tar.gz".into()],
            recalled: false,
            extensions: Default::default(),
        };
        self.apply(vec![Mutation::Insert {
            key: keys::replica_version(&v(version)),
            value: record.encode_value(),
        }]);
        self.update_subnet(|r| r.replica_version = v(version))
    }

    /// A CUP at `height` pinning `pinned`, signed by `signers` of network `net`.
    fn signed_cup(&self, net: &GeneratedNetwork, height: u64, pinned: RegistryVersion) -> Cup {
        self.signed_cup_naming(net, height, pinned, None)
    }

    /// The same, naming the release that runs from it.
    fn signed_cup_naming(
        &self,
        net: &GeneratedNetwork,
        height: u64,
        pinned: RegistryVersion,
        next: Option<&str>,
    ) -> Cup {
        self.signed_cup_with(net, height, pinned, next, None)
    }

    /// The same, naming the committee a resharing dealt the keys to.
    fn signed_cup_with(
        &self,
        net: &GeneratedNetwork,
        height: u64,
        pinned: RegistryVersion,
        next: Option<&str>,
        committee: Option<Vec<NodeId>>,
    ) -> Cup {
        let s = &net.genesis.subnets[0];
        // decide reads only who is in it; the keys and dealings are the replica's to check.
        let committee = committee.map(|nodes| cup::CupCommittee {
            nodes,
            low: s.low_threshold_key.clone(),
            high: s.high_threshold_key.clone(),
            dealt: cup::DealtKeys {
                context: CryptoHash([9; 32]),
                old_low: s.low_threshold_key.clone(),
                old_high: s.high_threshold_key.clone(),
                receivers: Vec::new(),
                low: Vec::new(),
                high: Vec::new(),
                low_answers: Vec::new(),
                high_answers: Vec::new(),
            },
        });
        let content = CupContent {
            subnet_id: self.subnet(),
            height: Height::new(height),
            block_hash: CryptoHash([height as u8; 32]),
            block_time_ns: 1_000 + height,
            registry_version: pinned,
            replica_version: v("1.0.0"),
            random_beacon: RandomBeacon(vec![1; 32]),
            state_hash: CryptoHash([2; 32]),
            oldest_registry_version_in_use: pinned,
            next_replica_version: next.map(v),
            committee,
            extensions: Default::default(),
        };
        let shares: Vec<SignatureShare> = net
            .nodes
            .iter()
            .take(3)
            .map(|n| SignedCup::sign_share(&content, &n.high_share))
            .collect();
        let public = &net.genesis.subnets[0].high_threshold_key;
        Cup::Signed(SignedCup::combine(content, public, &shares).unwrap())
    }
}

fn cup_of(d: &Decision) -> (u64, u64) {
    match d {
        Decision::Run { cup, .. } | Decision::Upgrade { cup, .. } => (
            cup.content().height.get(),
            cup.content().registry_version.get(),
        ),
        other => panic!("no CUP in {other:?}"),
    }
}

#[test]
fn a_fresh_boot_runs_the_registry_version_from_the_genesis_cup() {
    let fx = Fx::new();
    let d = decide(&fx.local(0, "1.0.0", None), &[], &fx.store);
    let Decision::Run {
        cup,
        release,
        prefetch,
        subnet,
    } = &d
    else {
        panic!("{d:?}")
    };
    assert!(matches!(**cup, Cup::Registry(_)));
    assert_eq!(
        (cup.content().height, release.version.as_str()),
        (Height::ZERO, "1.0.0")
    );
    assert_eq!(release.package_sha256, sha_of("1.0.0"));
    assert_eq!((*subnet, prefetch.clone()), (fx.subnet(), None));
}

#[test]
fn a_lagging_node_takes_a_peers_higher_cup_and_a_forged_one_is_ignored() {
    let fx = Fx::new();
    let local = fx.signed_cup(&fx.net, 10, rv(1));
    let peer = fx.signed_cup(&fx.net, 20, rv(1));
    let d = decide(
        &fx.local(0, "1.0.0", Some(local.clone())),
        std::slice::from_ref(&peer),
        &fx.store,
    );
    assert_eq!(cup_of(&d), (20, 1));
    // Signed by another network's shares: a higher height does not help it.
    let forged = fx.signed_cup(&network(2), 30, rv(1));
    let d = decide(
        &fx.local(0, "1.0.0", Some(local)),
        &[forged, peer],
        &fx.store,
    );
    assert_eq!(cup_of(&d), (20, 1));
}

/// The memo decides again whenever an input changes (a peer's CUP, the local CUP, the
/// registry's latest version, the running release) and only then, with the answer the
/// pure function gives.
#[test]
fn the_memo_decides_again_exactly_when_an_input_changes() {
    let mut fx = Fx::new();
    let mut memo = orchestrator::decide::Memo::default();
    let local = fx.signed_cup(&fx.net, 10, rv(1));
    let peer = fx.signed_cup(&fx.net, 20, rv(1));
    let me = fx.local(0, "1.0.0", Some(local.clone()));
    let peers = [peer.clone()];
    let check = |memo: &mut orchestrator::decide::Memo, fx: &Fx, me: &Local, peers: &[Cup]| {
        let d = memo.decide(me, peers, &fx.store);
        assert_eq!(
            format!("{d:?}"),
            format!("{:?}", decide(me, peers, &fx.store))
        );
        d
    };
    assert_eq!(cup_of(&check(&mut memo, &fx, &me, &peers)), (20, 1));
    check(&mut memo, &fx, &me, &peers);
    assert_eq!(memo.computed, 1, "the same inputs were decided twice");
    // A peer's CUP goes away: the local one is best again.
    assert_eq!(cup_of(&check(&mut memo, &fx, &me, &[])), (10, 1));
    assert_eq!(memo.computed, 2);
    // The same CUPs as the local one and as a peer's are different inputs.
    let swapped = fx.local(0, "1.0.0", Some(peer.clone()));
    check(&mut memo, &fx, &swapped, std::slice::from_ref(&local));
    assert_eq!(memo.computed, 3);
    // Another running release.
    check(
        &mut memo,
        &fx,
        &fx.local(0, "2.0.0", Some(local.clone())),
        &[],
    );
    assert_eq!(memo.computed, 4);
    // A new registry version (a deployment) with the same CUPs.
    fx.deploy("2.0.0");
    check(&mut memo, &fx, &fx.local(0, "2.0.0", Some(local)), &[]);
    assert_eq!(memo.computed, 5);
}

#[test]
fn a_recovery_cup_at_the_same_height_with_a_higher_registry_version_wins() {
    let mut fx = Fx::new();
    let local = fx.signed_cup(&fx.net, 20, rv(1));
    let recovery = CupContentsRecord {
        kind: CupContentsKind::Recovery,
        height: Height::new(20),
        time_ns: 5_000,
        state_hash: CryptoHash([3; 32]),
        extensions: Default::default(),
    };
    let at = fx.apply(vec![Mutation::Update {
        key: keys::cup_contents(&fx.subnet()),
        value: recovery.encode_value(),
    }]);
    let d = decide(&fx.local(0, "1.0.0", Some(local)), &[], &fx.store);
    assert_eq!(cup_of(&d), (20, at.get()));
    let Decision::Run { cup, .. } = d else {
        unreachable!()
    };
    assert!(matches!(*cup, Cup::Registry(_)));
}

#[test]
fn a_version_assigned_at_the_latest_registry_version_is_downloaded_ahead_not_run() {
    let mut fx = Fx::new();
    let local = fx.signed_cup(&fx.net, 10, rv(1));
    fx.deploy("2.0.0");
    let d = decide(&fx.local(0, "1.0.0", Some(local)), &[], &fx.store);
    let Decision::Run {
        release, prefetch, ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        (
            release.version,
            prefetch.map(|p| (p.version, p.package_sha256))
        ),
        (v("1.0.0"), Some((v("2.0.0"), sha_of("2.0.0"))))
    );
}

#[test]
fn a_cup_pinning_the_new_version_upgrades() {
    let mut fx = Fx::new();
    let at = fx.deploy("2.0.0");
    let cup = fx.signed_cup(&fx.net, 30, at);
    let d = decide(&fx.local(0, "1.0.0", Some(cup.clone())), &[], &fx.store);
    assert!(
        matches!(&d, Decision::Upgrade { release, .. } if release.version.as_str() == "2.0.0"),
        "{d:?}"
    );
    // Once on 2.0.0, the same CUP means: run.
    let d = decide(&fx.local(0, "2.0.0", Some(cup)), &[], &fx.store);
    assert!(
        matches!(&d, Decision::Run { release, prefetch: None, .. } if release.version.as_str() == "2.0.0"),
        "{d:?}"
    );
}

#[test]
fn a_cup_that_names_the_running_release_keeps_it_although_the_registry_pins_another() {
    // The summary pinned 2.0.0 without a quorum of nodes ready for it: the subnet ran on
    // 1.0.0 and its CUP says so. Nobody switches; 2.0.0 is still fetched ahead.
    let mut fx = Fx::new();
    let at = fx.deploy("2.0.0");
    let cup = fx.signed_cup_naming(&fx.net, 30, at, Some("1.0.0"));
    let d = decide(&fx.local(0, "1.0.0", Some(cup)), &[], &fx.store);
    assert!(
        matches!(&d, Decision::Run { release, prefetch: Some(next), .. }
            if release.version.as_str() == "1.0.0" && next.version.as_str() == "2.0.0"),
        "{d:?}"
    );
}

/// Governance recalls `version` (as `recall_version` writes it).
fn recall(fx: &mut Fx, version: &str) -> RegistryVersion {
    let key = keys::replica_version(&v(version));
    let latest = fx.store.latest_version();
    let bytes = fx.store.get(&key, latest).unwrap().unwrap();
    let mut record = ReplicaVersionRecord::decode_value(&bytes).unwrap();
    record.recalled = true;
    fx.apply(vec![Mutation::Update {
        key,
        value: record.encode_value(),
    }])
}

#[test]
fn a_recalled_release_is_never_run_whichever_cup_names_it_until_a_recovery() {
    let mut fx = Fx::new();
    let at = fx.deploy("2.0.0");
    let cup = fx.signed_cup(&fx.net, 30, at);
    // Without the recall, this CUP upgrades a 1.0.0 node and keeps a 2.0.0 node running.
    let d = decide(&fx.local(0, "1.0.0", Some(cup.clone())), &[], &fx.store);
    assert!(matches!(d, Decision::Upgrade { .. }), "{d:?}");
    recall(&mut fx, "2.0.0");
    for running in ["1.0.0", "2.0.0"] {
        let d = decide(&fx.local(0, running, Some(cup.clone())), &[], &fx.store);
        assert!(
            matches!(&d, Decision::Hold { reason, .. } if reason.contains("2.0.0 is recalled")),
            "{running}: {d:?}"
        );
    }
    // Nor is it downloaded ahead by a node whose CUP still runs 1.0.0.
    let older = fx.signed_cup(&fx.net, 20, rv(1));
    let d = decide(&fx.local(0, "1.0.0", Some(older)), &[], &fx.store);
    assert!(matches!(&d, Decision::Run { prefetch: None, .. }), "{d:?}");
    // A recovery onto 3.0.0 at the stalled height: the held node follows it.
    fx.deploy("3.0.0");
    let recovery = CupContentsRecord {
        kind: CupContentsKind::Recovery,
        height: Height::new(30),
        time_ns: 5_000,
        state_hash: CryptoHash([2; 32]),
        extensions: Default::default(),
    };
    fx.apply(vec![Mutation::Update {
        key: keys::cup_contents(&fx.subnet()),
        value: recovery.encode_value(),
    }]);
    let d = decide(&fx.local(0, "2.0.0", Some(cup)), &[], &fx.store);
    assert!(
        matches!(&d, Decision::Upgrade { release, .. } if release.version.as_str() == "3.0.0"),
        "{d:?}"
    );
}

#[test]
fn a_version_id_elected_again_with_another_package_is_an_upgrade() {
    let mut fx = Fx::new();
    // 2.0.0 with package B runs; the subnet moves to 3.0.0; 2.0.0 is retired and elected
    // again with package C, and deployed.
    let first = fx.deploy("2.0.0");
    let on_b = fx.signed_cup(&fx.net, 10, first);
    fx.deploy("3.0.0");
    fx.apply(vec![Mutation::Delete {
        key: keys::replica_version(&v("2.0.0")),
    }]);
    let again = fx.deploy_package("2.0.0", &"c".repeat(64));
    let cup = fx.signed_cup(&fx.net, 30, again);
    // A node still on 2.0.0 from package B: the same id, another package: upgrade.
    let d = decide(&fx.local(0, "2.0.0", Some(cup.clone())), &[], &fx.store);
    let Decision::Upgrade { release, .. } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        (release.version.as_str(), release.package_sha256.as_str()),
        ("2.0.0", "c".repeat(64).as_str())
    );
    // The package a CUP's registry version lists decides, not the latest one: at the
    // older CUP, 2.0.0 is still package B, which is what runs.
    let d = decide(&fx.local(0, "2.0.0", Some(on_b)), &[], &fx.store);
    assert!(
        matches!(&d, Decision::Run { release, .. } if release.package_sha256 == sha_of("2.0.0")),
        "{d:?}"
    );
}

#[test]
fn a_version_the_registry_lists_no_package_for_waits() {
    let mut fx = Fx::new();
    // A subnet record naming a version with no record (an invariant the registry keeps;
    // a damaged copy could break it): nothing to check an image against, so nothing runs.
    let at = fx.update_subnet(|r| r.replica_version = v("9.9.9"));
    let cup = fx.signed_cup(&fx.net, 10, at);
    let d = decide(&fx.local(0, "1.0.0", Some(cup)), &[], &fx.store);
    assert!(
        matches!(&d, Decision::Wait { reason } if reason.contains("9.9.9") && reason.contains("not elected")),
        "{d:?}"
    );
}

#[test]
fn a_node_in_no_subnet_is_unassigned() {
    let fx = Fx::new();
    let stranger = Local {
        node_id: fx.net.neuron_keys[0].node_id(),
        running_version: v("1.0.0"),
        running_package_sha256: sha_of("1.0.0"),
        cup: None,
    };
    assert_eq!(decide(&stranger, &[], &fx.store), Decision::Unassigned);
}

#[test]
fn a_removed_node_leaves_and_wipes_only_past_a_signed_cup_without_it() {
    let mut fx = Fx::new();
    let gone = fx.node(3);
    let removed_at = fx.update_subnet(|r| r.members.retain(|m| *m != gone));
    // Still needed: the CUP predates the removal.
    let before = fx.signed_cup(&fx.net, 10, rv(1));
    let d = decide(&fx.local(3, "1.0.0", Some(before)), &[], &fx.store);
    assert!(matches!(d, Decision::Run { .. }), "{d:?}");
    // The subnet signed a CUP past the removal: leave and wipe.
    let after = fx.signed_cup(&fx.net, 20, removed_at);
    let d = decide(&fx.local(3, "1.0.0", Some(after)), &[], &fx.store);
    assert_eq!(
        d,
        Decision::Leave {
            subnet: fx.subnet(),
            wipe: true
        }
    );
}

/// Governance's membership change moves `members`; the committee that holds the key
/// (`key_holders`) runs consensus until the subnet reshares: an added node waits, even
/// given a CUP that pins the change, and a removed one keeps running past it.
#[test]
fn an_added_node_waits_for_the_reshare_and_a_removed_one_keeps_its_share() {
    let mut net = network(1);
    net.add_spares(1, 20_000, &mut rand_chacha::ChaCha20Rng::seed_from_u64(2));
    let mut store = MemoryStore::new();
    store.apply(&net.genesis.mutations()).unwrap();
    let mut fx = Fx { net, store };
    let spare = Local {
        node_id: fx.net.spares[0].record.node_id,
        running_version: v("1.0.0"),
        running_package_sha256: sha_of("1.0.0"),
        cup: None,
    };
    assert_eq!(decide(&spare, &[], &fx.store), Decision::Unassigned);
    let gone = fx.node(3);
    let changed_at = fx.update_subnet(|r| {
        r.key_holders = Some(r.members.clone());
        r.members.push(spare.node_id);
        r.members.retain(|m| *m != gone);
    });
    let waits = |d: &Decision| matches!(d, Decision::Wait { reason } if reason.contains("not yet in its committee"));
    let d = decide(&spare, &[], &fx.store);
    assert!(waits(&d), "{d:?}");
    let after = fx.signed_cup(&fx.net, 20, changed_at);
    let d = decide(&fx.local(3, "1.0.0", Some(after.clone())), &[], &fx.store);
    assert!(matches!(d, Decision::Run { .. }), "{d:?}");
    let d = decide(
        &Local {
            cup: Some(after),
            ..spare
        },
        &[],
        &fx.store,
    );
    assert!(waits(&d), "{d:?}");
}

/// After the resharing, the CUP names the committee: an added node given it by a peer
/// runs from it, a removed node that holds it leaves and wipes, the others run on.
#[test]
fn the_cup_of_a_resharing_decides_who_runs_joins_and_leaves() {
    let mut net = network(1);
    net.add_spares(1, 20_000, &mut rand_chacha::ChaCha20Rng::seed_from_u64(2));
    let mut store = MemoryStore::new();
    store.apply(&net.genesis.mutations()).unwrap();
    let mut fx = Fx { net, store };
    let added = fx.net.spares[0].record.node_id;
    let gone = fx.node(3);
    let changed_at = fx.update_subnet(|r| {
        r.key_holders = Some(r.members.clone());
        r.members.push(added);
        r.members.retain(|m| *m != gone);
    });
    let members = fx.subnet_record().members;
    let reshared = fx.signed_cup_with(&fx.net, 20, changed_at, Some("1.0.0"), Some(members));
    let joiner = Local {
        node_id: added,
        running_version: v("1.0.0"),
        running_package_sha256: sha_of("1.0.0"),
        cup: None,
    };
    let d = decide(&joiner, std::slice::from_ref(&reshared), &fx.store);
    assert_eq!(cup_of(&d), (20, changed_at.get()), "{d:?}");
    assert!(matches!(d, Decision::Run { .. }), "{d:?}");
    let d = decide(
        &fx.local(3, "1.0.0", Some(reshared.clone())),
        &[],
        &fx.store,
    );
    assert!(matches!(d, Decision::Leave { wipe: true, .. }), "{d:?}");
    let d = decide(&fx.local(0, "1.0.0", Some(reshared)), &[], &fx.store);
    assert!(matches!(d, Decision::Run { .. }), "{d:?}");
}

#[test]
fn a_cup_pinning_a_registry_version_not_replicated_yet_waits() {
    let fx = Fx::new();
    let ahead = fx.signed_cup(&fx.net, 10, rv(5));
    let d = decide(&fx.local(0, "1.0.0", Some(ahead)), &[], &fx.store);
    assert!(
        matches!(&d, Decision::Wait { reason } if reason.contains("registry version 5")),
        "{d:?}"
    );
}

#[test]
fn an_unsigned_cup_the_registry_does_not_describe_is_ignored() {
    let fx = Fx::new();
    let local = fx.signed_cup(&fx.net, 10, rv(1));
    // A made-up "recovery" CUP, far higher: unsigned, so only the registry may vouch.
    let mut content = local.content().clone();
    content.height = Height::new(1_000);
    let made_up = Cup::Registry(cup::RegistryCup {
        kind: cup::RegistryCupKind::Recovery,
        content,
    });
    let d = decide(&fx.local(0, "1.0.0", Some(made_up.clone())), &[], &fx.store);
    assert_eq!(cup_of(&d), (0, 1), "{d:?}");
    let d = decide(&fx.local(0, "1.0.0", Some(local)), &[made_up], &fx.store);
    assert_eq!(cup_of(&d), (10, 1), "{d:?}");
}
