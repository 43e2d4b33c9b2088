//! An NNS subnet of real replica processes (issue 19): its first block installs the
//! genesis registry, governance calls sent as ingress to any of its nodes execute in
//! block order, and the caller reads each call's outcome once it is certified.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NODES, network, setup_nns, wait_for};
use crypto::ed25519::Ed25519KeyPair;
use registry::governance::{ProposalKind, SignedSubmission, Submission};
use replica::ingress::{Ingress, Operation, SignedIngress};
use serde_json::Value;
use types::ReplicaVersion;

fn propose(neuron: &Ed25519KeyPair, nonce: u64, version: &str) -> SignedIngress {
    let submission = Submission {
        network: network(),
        neuron_id: 0,
        nonce,
        kind: ProposalKind::ElectVersion {
            version: ReplicaVersion::new(version).unwrap(),
            sha256_hex: "b".repeat(64),
            urls: vec!["http://127.0.0.1:9/2.tar.gz".into()],
        },
    };
    let submission = types::codec::encode(&SignedSubmission::sign(submission, neuron));
    SignedIngress::sign(
        Ingress {
            network: network(),
            sender: neuron.public_key(),
            nonce,
            expiry_ns: replica::now_ns() + 120 * 1_000_000_000,
            operation: Operation::Propose { submission },
        },
        neuron,
    )
}

/// Sends `m` to node `i` and waits (on node `j`) until it is certified; returns the
/// request status.
async fn call(
    client: &reqwest::Client,
    net: &common::Net,
    i: usize,
    j: usize,
    m: &SignedIngress,
) -> Value {
    let r = client
        .post(format!("{}/api/v1/update", net.url(i)))
        .body(m.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        reqwest::StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap()
    );
    let start = std::time::Instant::now();
    loop {
        let s: Value = client
            .get(format!(
                "{}/api/v1/request_status?id={}&wait_ms=5000",
                net.url(j),
                m.id()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["status"] == "certified" {
            return s;
        }
        assert!(
            start.elapsed() < common::PATIENCE,
            "not certified: {s}\n{}",
            net.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nns_subnet_executes_governance_calls_sent_as_ingress() {
    let mut net = setup_nns();
    for i in 0..NODES {
        net.start(i);
    }
    let client = reqwest::Client::new();
    let all: Vec<usize> = (0..NODES).collect();
    wait_for(&client, &mut net, &all, "the first finalized blocks", |s| {
        s["finalized_height"].as_u64() >= Some(2)
    })
    .await;
    let neuron = Ed25519KeyPair::from_seed(&net.net.neuron_keys[0].seed());

    // The one neuron has the majority: its proposal is adopted and executed at once.
    let first = propose(&neuron, 1, "2.0.0");
    let s = call(&client, &net, 0, 1, &first).await;
    assert_eq!(
        s["governance"],
        serde_json::json!({ "proposed": { "proposal_id": 1 } }),
        "{s}"
    );
    // The same version again is refused, with the registry's reason, through another node.
    let s = call(&client, &net, 2, 3, &propose(&neuron, 2, "2.0.0")).await;
    let reason = s["governance"]["refused"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("2.0.0"), "{s}");
    // A replay of the first call is refused by the API (executed already).
    let r = client
        .post(format!("{}/api/v1/update", net.url(3)))
        .body(first.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    // Every node executed it and holds its reply.
    let first = first.id();
    for i in 0..NODES {
        let s: Value = client
            .get(format!(
                "{}/api/v1/request_status?id={first}&wait_ms=10000",
                net.url(i)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(s["status"], "certified", "node {i}: {s}");
        assert_eq!(
            s["governance"]["proposed"]["proposal_id"], 1,
            "node {i}: {s}"
        );
    }
    net.assert_running();
}
