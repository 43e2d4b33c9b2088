//! Four replicas as real processes on loopback, from a generated genesis and its registry
//! CUP (no orchestrator): signed updates, agreement on values and certified state hashes,
//! a kill -9 and restart that catches up, and a stranger's key refused by the transport.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use crypto::ed25519::Ed25519KeyPair;
use cup::Cup;
use registry::{Registry, store::RocksStore};
use serde_json::Value;
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};
use types::{NetworkId, RegistryVersion, ReplicaVersion};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_agree_survive_kill_9_and_refuse_strangers() {
    let mut net = setup();
    for i in 0..NODES {
        net.start(i);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let all: Vec<usize> = (0..NODES).collect();
    wait_for(&client, &mut net, &all, "the first finalized blocks", |s| {
        s["finalized_height"].as_u64() >= Some(2) && s["peers_connected"].as_u64() == Some(3)
    })
    .await;

    // Every node names its network; an update signed for another one is refused.
    let named = network().to_string();
    wait_for(
        &client,
        &mut net,
        &all,
        "the network id in the status",
        |s| s["network_id"].as_str() == Some(named.as_str()),
    )
    .await;
    let stranger = Ed25519KeyPair::from_seed(&[9; 32]);
    let r = client
        .post(format!("{}/api/v1/update", net.url(0)))
        .body(update_for(NetworkId([1; 32]), &stranger, 1, "elsewhere", "x").encode())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let reason = r.json::<Value>().await.unwrap()["error"].to_string();
    assert!(reason.contains("signed for network"), "{reason}");

    // 1,000 signed updates over all nodes; every node agrees on every value.
    let written = submit(&client, &net, &all, 0..1000, "a").await;
    check_agreement(&client, &mut net, &written).await;
    // Each node relayed what it accepted to the others (a node was sent a quarter
    // directly), and no finalized block repeated an update another one carried.
    for i in 0..NODES {
        let m = metrics(&client, &net.url(i)).await;
        assert!(m["replica_updates_accepted_total"] > 500, "node {i}: {m:?}");
        assert_eq!(m["replica_messages_skipped_total"], 0, "node {i}: {m:?}");
        // Over QUIC in batches: fewer batches than the updates sent here directly.
        let batches = m["replica_relay_batches_sent_total"];
        assert!(batches > 0 && batches <= 250, "node {i}: {m:?}");
        assert!(
            m["replica_relayed_updates_pooled_total"] > 100,
            "node {i}: {m:?}"
        );
    }

    // One more, followed by its message id: waiting for it answers once it is certified.
    let user = Ed25519KeyPair::from_seed(&[8; 32]);
    let body = |r: reqwest::RequestBuilder| async move {
        r.send().await.unwrap().json::<Value>().await.unwrap()
    };
    let r = body(
        client
            .post(format!("{}/api/v1/update", net.url(1)))
            .body(update(&user, 1, "followed", "by its id").encode()),
    )
    .await;
    let id = r["message_id"].as_str().unwrap().to_string();
    let ask = |q: String| {
        let c = client.clone();
        let url = format!("{}/api/v1/request_status?{q}", net.url(1));
        async move { c.get(url).send().await.unwrap() }
    };
    let s = body(client.get(format!(
        "{}/api/v1/request_status?id={id}&wait_ms=30000",
        net.url(1)
    )))
    .await;
    assert_eq!(s["status"], "certified", "{s}");
    assert_eq!(s["message_id"], id.as_str());
    let height = s["height"].as_u64().unwrap();
    let q = body(client.get(format!("{}/api/v1/query?key=followed", net.url(1)))).await;
    assert_eq!(q["value"], "by its id");
    assert!(q["certified_height"].as_u64() >= Some(height), "{q} {s}");
    let s = body(client.get(format!(
        "{}/api/v1/request_status?id={}",
        net.url(1),
        "ab".repeat(32)
    )))
    .await;
    assert_eq!(s["status"], "unknown");
    for bad in ["id=xyz", "wait_ms=5", &format!("id={id}&wait_ms=9999999")] {
        assert_eq!(
            ask(bad.to_string()).await.status(),
            reqwest::StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    // The status names the first and newest blocks with updates this process executed.
    let st = status(&client, &net.url(1)).await.unwrap();
    let (first, last) = (&st["first_payload"], &st["last_payload"]);
    assert!(
        first["height"].as_u64() <= Some(height) && last["height"].as_u64() >= Some(height),
        "{st}"
    );
    assert!(first["executed_at_ms"].as_u64() <= last["executed_at_ms"].as_u64());

    // kill -9 one node; the others keep going; it restarts and catches up.
    net.kill(3);
    let more = submit(&client, &net, &[0, 1, 2], 1000..1300, "b").await;
    let target = status(&client, &net.url(0)).await.unwrap()["finalized_height"]
        .as_u64()
        .unwrap();
    // Long enough that the others made a CUP the restarted node has not seen.
    wait_for(
        &client,
        &mut net,
        &[0, 1, 2],
        "progress while node 3 is down",
        |s| s["finalized_height"].as_u64() >= Some(target + 12),
    )
    .await;
    net.start(3);
    let target = status(&client, &net.url(0)).await.unwrap()["finalized_height"]
        .as_u64()
        .unwrap();
    wait_for(&client, &mut net, &[3], "node 3 to catch up", |s| {
        s["finalized_height"].as_u64() >= Some(target)
    })
    .await;
    let mut expected = written.clone();
    expected.extend(more);
    check_agreement(&client, &mut net, &expected).await;
    // It came back through a peer's CUP and fetched the state there from its peers.
    let m = metrics(&client, &net.url(3)).await;
    assert!(m["replica_catch_ups_total"] >= 1, "{m:?}");
    assert!(m["replica_state_syncs_total"] >= 1, "{m:?}");

    // A stranger (a key not in the registry) cannot connect.
    let stranger = Ed25519KeyPair::from_seed(&[9; 32]);
    let members: Vec<transport::Member> = net
        .net
        .nodes
        .iter()
        .map(|n| transport::Member {
            node_id: n.record.node_id,
            public_key: n.record.ed25519_public_key,
            address: n.record.consensus_address.parse().unwrap(),
        })
        .collect();
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (t, _inbox) = transport::Transport::start(
        transport::TransportConfig::new(addr, replica::WIRE_PROTOCOL),
        stranger,
        members,
    )
    .await
    .unwrap();
    t.broadcast(b"let me in".to_vec());
    let start = Instant::now();
    loop {
        let m = metrics(&client, &net.url(0)).await;
        if m["replica_transport_rejected_connections_total"] > 0 {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the stranger was never refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(t.connected_peers().is_empty(), "a stranger connected");
    t.shutdown().await;
}

/// Governance on node 0's registry copy, replicated to the others' copies (what the
/// orchestrators' replicators do): elect release 2.0.0 and deploy it to the subnet.
fn deploy_2_0_0(net: &Net) {
    use registry::governance::{ProposalKind, SignedSubmission, Submission};
    use registry::store::RegistryStore;
    let subnet = net.net.genesis.subnets[0].subnet_id;
    let mut reg =
        Registry::open(RocksStore::open(&net.node_dir(0).join("registry")).unwrap()).unwrap();
    let kinds = [
        ProposalKind::ElectVersion {
            version: ReplicaVersion::new("2.0.0").unwrap(),
            sha256_hex: "b".repeat(64),
            urls: vec!["http://127.0.0.1:9/2.tar.gz".into()],
        },
        ProposalKind::DeployVersion {
            subnet,
            version: ReplicaVersion::new("2.0.0").unwrap(),
        },
    ];
    for (nonce, kind) in kinds.into_iter().enumerate() {
        let s = Submission {
            network: network(),
            neuron_id: 0,
            nonce: nonce as u64,
            kind,
        };
        // One neuron holds all the voting power: its proposal is adopted at once.
        let signed = SignedSubmission::sign(s, &net.net.neuron_keys[0]);
        let verified = reg.verify_submission(&network(), &signed).unwrap();
        reg.submit(replica::now_ns(), &verified).unwrap();
    }
    let deltas = reg
        .store()
        .changes_since(RegistryVersion::new(1), 100)
        .unwrap();
    assert_eq!(deltas.len(), 2, "two adopted proposals, two versions");
    for i in 1..NODES {
        let mut store = RocksStore::open(&net.node_dir(i).join("registry")).unwrap();
        for d in &deltas {
            store.append(d).unwrap();
        }
    }
}

/// The newest CUP file a node wrote.
fn newest_cup(net: &Net, i: usize) -> PathBuf {
    let mut cups: Vec<PathBuf> = std::fs::read_dir(net.node_dir(i).join("cups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cup"))
        .collect();
    cups.sort();
    cups.pop().unwrap()
}

/// An upgrade by hand (the orchestrator's job, issue 6): the registry assigns 2.0.0, the
/// 1.0.0 replicas halt at a CUP (queries work, updates get "subnet is upgrading"), and
/// replicas started as 2.0.0 from that CUP resume with the state intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_halt_at_a_cup_for_an_upgrade_and_the_next_version_resumes_from_it() {
    let mut net = setup();
    for i in 0..NODES {
        net.start(i);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let all: Vec<usize> = (0..NODES).collect();
    wait_for(&client, &mut net, &all, "the first finalized blocks", |s| {
        s["finalized_height"].as_u64() >= Some(2)
    })
    .await;
    let before = submit(&client, &net, &all, 0..100, "v1").await;
    check_agreement(&client, &mut net, &before).await;

    deploy_2_0_0(&net);
    // No node is ready for 2.0.0 yet (no orchestrator here wrote its verdict): the
    // summaries pin it and the subnet runs on, past two of them (DKG interval 9).
    let pinned = status(&client, &net.url(0)).await.unwrap()["finalized_height"]
        .as_u64()
        .unwrap();
    wait_for(&client, &mut net, &all, "two more summaries", |s| {
        s["finalized_height"].as_u64() > Some(pinned + 20)
    })
    .await;
    for i in 0..NODES {
        let s = status(&client, &net.url(i)).await.unwrap();
        assert_eq!(
            s["halting"], false,
            "node {i} halts with no node ready: {s}"
        );
    }
    // Each node's orchestrator would now say: ready (its preflight passed).
    for i in 0..NODES {
        let verdict = r#"{"version":"2.0.0","ready":true,"reason":"preflight passed"}"#;
        std::fs::write(net.node_dir(i).join("upgrade-readiness.json"), verdict).unwrap();
    }
    wait_for(
        &client,
        &mut net,
        &all,
        "every 1.0.0 replica to halt",
        |s| s["halted"].as_bool() == Some(true),
    )
    .await;
    // Halted: queries work, updates are refused with the reason.
    let user = Ed25519KeyPair::from_seed(&[8; 32]);
    let refused = client
        .post(format!("{}/api/v1/update", net.url(0)))
        .body(update(&user, 1, "late", "x").encode())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("subnet is upgrading")
    );
    check_agreement(&client, &mut net, &before).await;

    // Every node made the same halting CUP; it names the new version.
    let cup = newest_cup(&net, 0);
    let bytes = std::fs::read(&cup).unwrap();
    for i in 1..NODES {
        assert_eq!(
            std::fs::read(newest_cup(&net, i)).unwrap(),
            bytes,
            "node {i}"
        );
    }
    let halting = Cup::decode(&bytes).unwrap();
    assert_eq!(halting.content().replica_version.as_str(), "1.0.0");
    let next = halting.content().next_replica_version.as_ref();
    assert_eq!(next.map(|v| v.as_str()), Some("2.0.0"));
    for i in 0..NODES {
        net.kill(i);
    }
    // The old version refuses to start from the upgrade CUP, and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_replica"))
        .args(["--node-dir", net.node_dir(0).to_str().unwrap()])
        .args(["--version", "1.0.0", "--cup", cup.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runs 2.0.0"), "{err}");

    for i in 0..NODES {
        net.start_at(i, "2.0.0", &cup);
    }
    let h = halting.content().height.get();
    wait_for(
        &client,
        &mut net,
        &all,
        "2.0.0 to finalize past the CUP",
        |s| {
            s["replica_version"].as_str() == Some("2.0.0")
                && s["finalized_height"].as_u64() > Some(h + 2)
        },
    )
    .await;
    let after = submit(&client, &net, &all, 100..200, "v2").await;
    let mut expected = before;
    expected.extend(after);
    check_agreement(&client, &mut net, &expected).await;
}
