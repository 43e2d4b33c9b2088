//! Readiness-gated halting: a summary that pins a new replica version halts the release
//! only with `n - f` nodes' signed readiness for that version in it.

use super::*;

fn next() -> ReplicaVersion {
    ReplicaVersion::new("2.0.0").unwrap()
}

/// Registry version 2 assigns the subnet `2.0.0`; every core learns it.
fn deploy(net: &mut Net) {
    let info = SubnetInfo {
        replica_version: next(),
        halt_at_cup_height: false,
        is_halted: false,
        members: Vec::new(),
    };
    for i in 0..net.cores.len() {
        let now = net.clocks[i];
        net.cores[i].on_event(
            now,
            Event::Registry {
                version: RegistryVersion::new(2),
                info: info.clone(),
            },
        );
    }
    net.settle();
}

fn say_ready(net: &mut Net, nodes: &[usize]) {
    for &i in nodes {
        let now = net.clocks[i];
        net.cores[i].on_event(
            now,
            Event::Readiness {
                version: next(),
                ready: true,
                reason: "preflight passed".into(),
            },
        );
    }
    net.settle();
}

/// Advances until node 0 has finalized `h` (or gives up, and the caller's check fails).
fn run_to(net: &mut Net, h: u64) {
    for _ in 0..2_000 {
        if net.cores[0].finalized_height() >= Height::new(h) {
            return;
        }
        net.advance(50 * MS);
    }
}

/// The finalized summary block at `h` as node `i` holds it.
fn summary(net: &Net, i: usize, h: u64) -> Block {
    let h = Height::new(h);
    let hash = net.cores[i].finalized_chain[&h];
    net.cores[i].pool[&h].blocks[&hash].proposal.block.clone()
}

#[test]
fn a_new_version_halts_the_subnet_only_once_a_quorum_is_ready() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    deploy(&mut net);
    // f + 1 = 2 ready: not a quorum. The subnet runs through two summaries.
    say_ready(&mut net, &[0, 1]);
    run_to(&mut net, 25);
    assert!(net.cores[0].finalized_height() >= Height::new(25));
    for h in [10, 20] {
        let b = summary(&net, 0, h);
        assert_eq!(b.context.registry_version, RegistryVersion::new(2));
        let signers: Vec<_> = b.ready.iter().map(|r| r.signer).collect();
        assert_eq!(signers, vec![0, 1], "summary {h}");
    }
    assert!(net.cores.iter().all(|c| !c.is_halting()));
    // Every node knows who is ready (its own word and the gossiped ones).
    for c in &net.cores {
        let ready: Vec<_> = c
            .readiness()
            .filter(|r| r.ready)
            .map(|r| r.signer)
            .collect();
        assert_eq!(ready, vec![0, 1]);
    }
    // A third node: the next summary (30) carries the quorum and halts the release there.
    say_ready(&mut net, &[3]);
    run_to(&mut net, 45);
    let b = summary(&net, 0, 30);
    assert_eq!(b.ready.len(), 3, "{:?}", b.ready);
    for c in &net.cores {
        assert!(c.is_halting(), "{c:?}");
        assert!(
            c.finalized_height() < Height::new(40),
            "{c:?} passed the next summary"
        );
    }
}

#[test]
fn a_restarted_nodes_word_replaces_the_one_it_gave_before_at_a_higher_height() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    deploy(&mut net);
    say_ready(&mut net, &[0, 1]);
    // Node 0, before a restart, had said "not ready" at height 40 (its peers hold that
    // word); restarted from an older CUP, it now says "ready" at a lower height.
    let mut old = net.cores[0]
        .readiness()
        .find(|r| r.signer == 0)
        .unwrap()
        .clone();
    old.height = Height::new(40);
    old.ready = false;
    old.signature = net.cores[0].crypto().sign_node(
        domain::UPGRADE_READINESS,
        &signed_bytes(&version(), &old.signed_part()),
    );
    for i in 1..4 {
        let now = net.clocks[i];
        net.deliver(i, 0, now, Artifact::Readiness(old.clone()));
        let held = net.cores[i].readiness().find(|r| r.signer == 0).unwrap();
        assert!(!held.ready, "node {i} holds the higher word for now");
    }
    // Past height 40, its next re-sending signs its word anew at its height: peers take
    // it. (Two ready nodes: the subnet runs on meanwhile.)
    run_to(&mut net, 55);
    for i in 1..4 {
        let held = net.cores[i].readiness().find(|r| r.signer == 0).unwrap();
        assert!(
            held.ready && held.height > Height::new(40),
            "node {i}: {held:?}"
        );
    }
    assert!(net.cores.iter().all(|c| !c.is_halting()));
}

#[test]
fn a_ready_word_that_is_forged_or_outside_a_summary_invalidates_the_block() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    deploy(&mut net);
    say_ready(&mut net, &[0]);
    let word = net.cores[0].readiness().next().unwrap().clone();
    let maker = net.rank(0);
    let target = (maker + 1) % 4;
    let resign = |net: &Net, block: Block| {
        let signature = net.cores[maker]
            .crypto()
            .sign_block(&signed_bytes(&version(), &block.hash()));
        Artifact::Proposal(BlockProposal { block, signature })
    };
    // Height 1 is no summary: a word there is refused.
    let mut block = net.proposals_of(maker)[0].clone();
    block.ready = vec![word.clone()];
    let now = net.clocks[target];
    let p = resign(&net, block.clone());
    net.deliver(target, maker as NodeIndex, now, p);
    assert_eq!(
        net.cores[target].stats().last_invalid,
        Some("readiness outside a summary block")
    );
    // A word whose signature is not its signer's.
    let mut forged = word.clone();
    forged.signer = 2;
    net.cores[target].receive_readiness(forged.clone());
    assert_eq!(
        net.cores[target].stats().last_invalid,
        Some("bad readiness signature")
    );
    assert!(net.cores[target].readiness().all(|r| r.signer != 2));
    // Checked the same way inside a summary block.
    let mut summary = block;
    summary.height = Height::new(10);
    summary.is_summary = true;
    summary.payload = Vec::new();
    summary.context.registry_version = RegistryVersion::new(2);
    summary.ready = vec![forged];
    assert_eq!(
        net.cores[target].check_ready_words(&summary),
        Err("bad readiness signature")
    );
    summary.ready = vec![word.clone(), word];
    assert_eq!(
        net.cores[target].check_ready_words(&summary),
        Err("ready words not in signer order")
    );
}

#[test]
fn a_core_starting_from_a_cup_halts_only_if_the_cup_names_another_release() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let n = 4;
    let low = deal(n, low_threshold(n), &mut rng).unwrap();
    let high = deal(n, high_threshold(n), &mut rng).unwrap();
    let ed = Ed25519KeyPair::generate(&mut rng);
    let bls = BlsSecretKey::generate(&mut rng);
    let crypto = || RealCrypto {
        keys: SubnetKeys {
            ed25519: vec![ed.public_key(); n],
            bls: vec![bls.public_key(); n],
            low: low.public.clone(),
            high: high.public.clone(),
        },
        secrets: NodeSecrets {
            ed25519: Ed25519KeyPair::from_seed(&ed.seed()),
            bls: bls.clone(),
            low_share: low.shares[0].clone(),
            high_share: high.shares[0].clone(),
            encryption: None,
        },
        hashes: Default::default(),
    };
    let mut registry = registry();
    registry.push((
        RegistryVersion::new(2),
        SubnetInfo {
            replica_version: next(),
            halt_at_cup_height: false,
            is_halted: false,
            members: Vec::new(),
        },
    ));
    let start = |next_version: Option<ReplicaVersion>| {
        let base = Base {
            height: Height::new(10),
            registry_version: RegistryVersion::new(2),
            next_version,
            ..genesis()
        };
        let now = Now {
            mono_ns: SEC,
            wall_ns: WALL,
        };
        Consensus::new(config(0, n), crypto(), base, registry.clone(), [], now)
            .unwrap()
            .is_halted()
    };
    // The CUP says this release runs on (no quorum was ready): it does.
    assert!(!start(Some(version())));
    // The CUP names the new release, or (older CUPs) names none: this one stays halted.
    assert!(start(Some(next())));
    assert!(start(None));
}
