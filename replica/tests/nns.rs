//! An NNS subnet of real replica processes (issue 19): its first block installs the
//! genesis registry, governance calls sent as ingress to any of its nodes execute in
//! block order, and the caller reads each call's outcome once it is certified.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NODES, network, setup_nns, wait_for};
use crypto::ed25519::Ed25519KeyPair;
use registry::governance::{ProposalKind, SignedSubmission, Submission};
use registry::store::kv::genesis_chain_hash;
use replica::{
    certified::VerifyError,
    ingress::{Ingress, Operation, SignedIngress},
    registry_page::{
        GovernancePage, MAX_PAGE_BYTES, RegistryPage, verify_governance_page, verify_registry_page,
    },
};
use serde_json::Value;
use types::{CryptoHash, RegistryVersion, ReplicaVersion};

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

/// `GET /api/v1/request_status` of message `id` at `url`, waiting up to `wait_ms`.
async fn request_status(client: &reqwest::Client, url: &str, id: &str, wait_ms: u64) -> Value {
    client
        .get(format!(
            "{url}/api/v1/request_status?id={id}&wait_ms={wait_ms}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
        let s = request_status(client, &net.url(j), &m.id().to_string(), 5000).await;
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
        let s = request_status(&client, &net.url(i), &first.to_string(), 10_000).await;
        assert_eq!(s["status"], "certified", "node {i}: {s}");
        assert_eq!(
            s["governance"]["proposed"]["proposal_id"], 1,
            "node {i}: {s}"
        );
    }

    // A certified page of the registry's changes from any node, checked with the NNS
    // subnet's key and the chain hash at version 0: genesis, then the election.
    let nns_key = net.net.genesis.subnets[1].high_threshold_key.group_key;
    let url3 = net.url(3);
    let page = |since: u64| {
        let url = format!("{url3}/api/v1/registry/changes?since={since}");
        async move {
            let r = reqwest::Client::new().get(url).send().await.unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::OK);
            let body = r.bytes().await.unwrap();
            types::codec::decode::<RegistryPage>(&body, MAX_PAGE_BYTES).unwrap()
        }
    };
    let start = std::time::Instant::now();
    let mut p = page(0).await;
    while p.latest < RegistryVersion::new(2) {
        assert!(
            start.elapsed() < common::PATIENCE,
            "node 3 has not certified version 2"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        p = page(0).await;
    }
    let trusted = genesis_chain_hash();
    let deltas = verify_registry_page(&p, &trusted, &nns_key).unwrap();
    assert_eq!(deltas.len(), 2);
    assert!(
        deltas[1]
            .changes
            .iter()
            .any(|c| c.key == "replica_version_2.0.0"),
        "{:?}",
        deltas[1]
    );
    // Whatever the node changes, the reader notices.
    let app_key = net.net.genesis.subnets[0].high_threshold_key.group_key;
    assert!(matches!(
        verify_registry_page(&p, &trusted, &app_key),
        Err(VerifyError::BadSignature(_))
    ));
    let mut forged = p.clone();
    if let Some(v) = forged.deltas[1].changes[0].value.as_mut() {
        v[0] ^= 1;
    }
    assert!(verify_registry_page(&forged, &trusted, &nns_key).is_err());
    let mut withheld = p.clone();
    withheld.deltas.pop();
    assert!(verify_registry_page(&withheld, &trusted, &nns_key).is_err());
    let mut stale = p.clone();
    stale.latest = RegistryVersion::new(1);
    assert!(verify_registry_page(&stale, &trusted, &nns_key).is_err());
    // A node that hides version 2 from a reader at version 1 ("nothing new") is caught
    // by the certified latest version.
    let mut hiding = p.clone();
    hiding.since = RegistryVersion::new(1);
    hiding.latest = RegistryVersion::new(1);
    hiding.deltas.clear();
    hiding.head = None;
    assert!(matches!(
        verify_registry_page(&hiding, &trusted, &nns_key),
        Err(VerifyError::StateHashMismatch { .. })
    ));
    assert!(verify_registry_page(&p, &CryptoHash([1; 32]), &nns_key).is_err());
    // Up to date: no deltas, and the page proves there are none.
    let head = p.head.clone().unwrap().0;
    let p2 = page(2).await;
    if p2.latest == RegistryVersion::new(2) {
        assert_eq!(verify_registry_page(&p2, &head, &nns_key).unwrap().len(), 0);
    }

    // Governance's proposals, certified the same way, from another node: proposal 1,
    // executed; the refused duplicate made none.
    let r = client
        .get(format!("{}/api/v1/registry/proposals?from=1", net.url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let g: GovernancePage =
        types::codec::decode(&r.bytes().await.unwrap(), MAX_PAGE_BYTES).unwrap();
    let v = verify_governance_page(&g, &nns_key).unwrap();
    assert_eq!(v.next_proposal_id, 2);
    assert_eq!(v.proposals.len(), 1);
    assert_eq!(v.proposals[0].id, 1);
    assert_eq!(
        v.proposals[0].status,
        registry::governance::ProposalStatus::Executed
    );
    // Whatever the node changes, the reader notices: another subnet's key, a changed
    // proposal, a withheld one, a proposal under another id, a changed count.
    assert!(matches!(
        verify_governance_page(&g, &app_key),
        Err(VerifyError::BadSignature(_))
    ));
    let mut forged = g.clone();
    let last = forged.proposals[0].0.len() - 1;
    forged.proposals[0].0[last] ^= 1;
    assert!(verify_governance_page(&forged, &nns_key).is_err());
    let mut withheld = g.clone();
    withheld.proposals.clear();
    assert!(verify_governance_page(&withheld, &nns_key).is_err());
    let mut moved = g.clone();
    moved.from = 2;
    assert!(verify_governance_page(&moved, &nns_key).is_err());
    let mut fewer = g.clone();
    fewer.meta = None;
    withheld.meta = None;
    assert!(verify_governance_page(&fewer, &nns_key).is_err());
    assert!(verify_governance_page(&withheld, &nns_key).is_err());
    // Past the last id: an empty page, proven complete.
    let r = client
        .get(format!("{}/api/v1/registry/proposals?from=2", net.url(1)))
        .send()
        .await
        .unwrap();
    let g2: GovernancePage =
        types::codec::decode(&r.bytes().await.unwrap(), MAX_PAGE_BYTES).unwrap();
    let v2 = verify_governance_page(&g2, &nns_key).unwrap();
    assert!(
        v2.proposals.is_empty() && v2.next_proposal_id >= 2,
        "{v2:?}"
    );
    net.assert_running();
}
