//! The registry server in process, under a malicious user: a flood of badly signed or
//! foreign submissions is refused before any whole-registry decode (and counted), and the
//! lists governance can grow come in pages.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::*;
use crypto::ed25519::Ed25519KeyPair;
use registry::{
    Registry,
    api::{MAX_PROPOSALS_PER_PAGE, ProposalsPage, VersionsPage},
    client::{ClientError, RegistryClient},
    genesis::GeneratedNetwork,
    governance::{Ballot, ProposalKind, SignedBallot, SignedSubmission, Submission, Vote},
    server::{self, ServerState},
    store::RocksStore,
};
use serde_json::Value;
use std::sync::Arc;
use types::{NetworkId, ReplicaVersion};

struct Running {
    url: String,
    net: GeneratedNetwork,
    network: NetworkId,
    _dir: tempfile::TempDir,
}

/// A registry directory made in process (what `registry init` writes), served on a free
/// loopback port.
async fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = write_genesis(dir.path());
    let reg_dir = dir.path().join("registry");
    std::fs::create_dir_all(&reg_dir).expect("mkdir");
    let key = Ed25519KeyPair::from_seed(&[21; 32]);
    key.write_to_file(&server::key_path(&reg_dir)).expect("key");
    {
        let store = RocksStore::open(&server::store_path(&reg_dir)).expect("store");
        let mut reg = Registry::open(store).expect("open");
        reg.init(&net.genesis.mutations(), 3600 * 1_000_000_000)
            .expect("init");
    }
    let state = ServerState::open(&reg_dir).expect("server state");
    let network = state.network();
    assert_eq!(
        network,
        NetworkId::from_registry_root_key(key.public_key().as_bytes())
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(server::serve(listener, Arc::clone(&state)));
    Running {
        url,
        net,
        network,
        _dir: dir,
    }
}

async fn metric(url: &str, line_start: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .map_or(0, |v| v.trim().parse().expect("a number"))
}

fn elect(version: &str) -> ProposalKind {
    ProposalKind::ElectVersion {
        version: ReplicaVersion::new(version).expect("valid"),
        sha256_hex: "c".repeat(64),
        urls: vec!["http://127.0.0.1:9/p.tar.gz".into()],
    }
}

fn submission(network: NetworkId, neuron_id: u64, nonce: u64, kind: ProposalKind) -> Submission {
    Submission {
        network,
        neuron_id,
        nonce,
        kind,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_badly_signed_submissions_is_refused_before_any_decode() {
    let r = start().await;
    let client = RegistryClient::new(&r.url, None).expect("client");
    let keys = &r.net.neuron_keys;
    let decodes = "registry_snapshot_decodes_total ";
    let before = metric(&r.url, decodes).await;
    const FLOOD: u64 = 200;
    for nonce in 0..FLOOD {
        // Neuron 1's proposal signed with neuron 2's key.
        let forged = SignedSubmission::sign(submission(r.network, 1, nonce, elect("3")), &keys[2]);
        match client.submit(&forged).await {
            Err(ClientError::Refused {
                status: 400,
                message,
            }) => {
                assert!(message.contains("signature"), "{message}")
            }
            other => panic!("a forged submission was not refused: {other:?}"),
        }
    }
    let foreign =
        SignedSubmission::sign(submission(NetworkId([3; 32]), 0, 1, elect("3")), &keys[0]);
    match client.submit(&foreign).await {
        Err(ClientError::Refused {
            status: 400,
            message,
        }) => {
            assert!(message.contains("signed for network"), "{message}")
        }
        other => panic!("a foreign submission was not refused: {other:?}"),
    }
    assert_eq!(
        metric(&r.url, decodes).await,
        before,
        "refused submissions decoded the registry"
    );
    assert_eq!(
        metric(&r.url, "registry_refusals_total{kind=\"bad_signature\"} ").await,
        FLOOD
    );
    assert_eq!(
        metric(&r.url, "registry_refusals_total{kind=\"wrong_network\"} ").await,
        1
    );
    // Honest requests go through: a proposal and the vote that adopts it.
    let id = client
        .submit(&SignedSubmission::sign(
            submission(r.network, 0, 1, elect("3")),
            &keys[0],
        ))
        .await
        .expect("an honest submission");
    let ballot = Ballot {
        network: r.network,
        proposal_id: id,
        neuron_id: 1,
        vote: Vote::Yes,
    };
    let status = client
        .vote(&SignedBallot::sign(ballot, &keys[1]))
        .await
        .expect("an honest vote");
    assert_eq!(status.status.name(), "executed");
    assert!(metric(&r.url, decodes).await > before);
    assert_eq!(client.status().await.expect("status").network_id, r.network);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_and_versions_come_in_pages() {
    let r = start().await;
    let client = RegistryClient::new(&r.url, None).expect("client");
    let keys = &r.net.neuron_keys;
    // Neuron 0 of three equal neurons: each proposal stays open.
    let total = MAX_PROPOSALS_PER_PAGE as u64 + 5;
    for i in 0..total {
        let kind = elect(&format!("4.{i}"));
        client
            .submit(&SignedSubmission::sign(
                submission(r.network, 0, i, kind),
                &keys[0],
            ))
            .await
            .expect("submit");
    }
    let get = |path: &str| {
        let url = format!("{}{path}", r.url);
        async move {
            reqwest::get(url)
                .await
                .expect("get")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|p| p["proposal_id"].as_u64().expect("id"))
            .collect()
    };
    // Without parameters: the first page, as the bare list older callers read.
    let first = get("/api/v1/proposals").await;
    assert_eq!(
        ids(&first),
        (1..=MAX_PROPOSALS_PER_PAGE as u64).collect::<Vec<_>>()
    );
    // With them: a page and the cursor of the next.
    let page = get("/api/v1/proposals?limit=2").await;
    assert_eq!(
        (ids(&page["proposals"]), page["next"].as_u64()),
        (vec![1, 2], Some(2))
    );
    let page = get("/api/v1/proposals?after=2&limit=2").await;
    assert_eq!(
        (ids(&page["proposals"]), page["next"].as_u64()),
        (vec![3, 4], Some(4))
    );
    let page = get(&format!("/api/v1/proposals?after={}", total - 1)).await;
    assert_eq!(
        (ids(&page["proposals"]), page["next"].clone()),
        (vec![total], Value::Null)
    );
    let page = get(&format!("/api/v1/proposals?after={total}")).await;
    assert_eq!(
        (ids(&page["proposals"]), page["next"].clone()),
        (vec![], Value::Null)
    );
    // A limit is capped, never refused.
    let page = get("/api/v1/proposals?limit=100000").await;
    assert_eq!(
        page["proposals"].as_array().expect("list").len(),
        MAX_PROPOSALS_PER_PAGE
    );
    let page: ProposalsPage = client.proposals_page(Some(10), 0).await.expect("page");
    assert_eq!(page.proposals.len(), 1);
    // The client (and so `nns proposals`) follows the pages.
    let all = client.proposals().await.expect("proposals");
    assert_eq!(
        all.iter().map(|p| p.proposal_id).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let url = r.url.clone();
    let listed = tokio::task::spawn_blocking(move || proposal_count(&url))
        .await
        .expect("nns proposals");
    assert_eq!(listed, total as usize);

    // Elected versions page the same way (1.0.0 from genesis, 4.0 and 4.1 elected now).
    for id in [1, 2] {
        let ballot = Ballot {
            network: r.network,
            proposal_id: id,
            neuron_id: 1,
            vote: Vote::Yes,
        };
        client
            .vote(&SignedBallot::sign(ballot, &keys[1]))
            .await
            .expect("vote");
    }
    let page: VersionsPage = client.versions_page(None, 1).await.expect("page");
    assert_eq!(page.versions.len(), 1);
    assert_eq!(page.next.as_ref().map(|v| v.as_str()), Some("1.0.0"));
    let legacy = get("/api/v1/versions").await;
    assert_eq!(legacy.as_array().expect("a bare list").len(), 3);
    let versions: Vec<String> = client
        .versions()
        .await
        .expect("versions")
        .into_iter()
        .map(|v| v.version.as_str().to_string())
        .collect();
    assert_eq!(versions, ["1.0.0", "4.0", "4.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_between_two_commits_share_one_decode() {
    let r = start().await;
    let decodes = "registry_snapshot_decodes_total ";
    let before = metric(&r.url, decodes).await;
    for _ in 0..50 {
        for path in ["/api/v1/versions", "/api/v1/subnets", "/api/v1/neurons"] {
            let answer = reqwest::get(format!("{}{path}", r.url)).await.expect("get");
            assert!(answer.status().is_success(), "{path}");
        }
    }
    let after = metric(&r.url, decodes).await;
    assert!(
        after <= before + 1,
        "150 reads of one registry version decoded it {} times",
        after - before
    );
}
