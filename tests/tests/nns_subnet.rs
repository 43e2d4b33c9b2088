//! `testnet prep --nns-nodes` (issue 19): an NNS subnet of orchestrator-run replicas
//! beside the application subnet, from one release package. Its first block installs
//! the genesis registry; a proposal and a vote sent as ingress to two of its nodes
//! execute there, with the block time as governance's clock; the application subnet
//! refuses governance calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crypto::ed25519::Ed25519KeyPair;
use registry::governance::{
    Ballot, ProposalKind, SignedBallot, SignedSubmission, Submission, Vote,
};
use replica::ingress::{Ingress, Operation, SignedIngress};
use serde_json::Value;
use tests::testnet::{Net, PATIENCE, nodes};
use types::{NetworkId, ReplicaVersion};

fn ingress(network: NetworkId, key: &Ed25519KeyPair, nonce: u64, op: Operation) -> SignedIngress {
    let ingress = Ingress {
        network,
        sender: key.public_key(),
        nonce,
        expiry_ns: replica::now_ns() + 120 * 1_000_000_000,
        operation: op,
    };
    SignedIngress::sign(ingress, key)
}

/// Posts `m` to the replica at `url`; the HTTP status and body.
fn post(net: &Net, url: &str, m: &SignedIngress) -> (u16, String) {
    net.rt.block_on(async {
        let r = net
            .http
            .post(format!("{url}/api/v1/update"))
            .body(m.encode())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// Waits until `m` is certified on the replica at `url`; its request status.
fn certified(net: &Net, url: &str, m: &SignedIngress) -> Value {
    let start = std::time::Instant::now();
    loop {
        let s = net.get(format!("{url}/api/v1/request_status?id={}", m.id()));
        if let Some(s) = s.filter(|s| s["status"] == "certified") {
            return s;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{} not certified at {url}",
            m.id()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn an_nns_subnet_runs_beside_the_application_subnet_and_executes_governance_ingress() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Net::new(&tests::binaries(), &dir);
    net.prep_up_with(1, &["--nns-nodes", "4"]);
    let s = net.status();
    let all = nodes(&s).clone();
    assert_eq!(all.len(), 5, "{s}");
    for (i, n) in all.iter().enumerate() {
        assert_eq!(n["nns"], i >= 1, "{n}");
    }
    let url = |i: usize| all[i]["replica_url"].as_str().unwrap().to_string();
    let nns_subnet = all[1]["subnet_id"].clone();
    assert_ne!(all[0]["subnet_id"], nns_subnet, "two subnets: {s}");
    assert!(all[1..].iter().all(|n| n["subnet_id"] == nns_subnet), "{s}");

    let network = net.replica_status(&url(1)).unwrap().network_id;
    let neuron = |i: usize| {
        Ed25519KeyPair::read_from_file(&dir.join("neurons").join(format!("neuron-{i}.key")))
            .unwrap()
    };
    let submission = Submission {
        network,
        neuron_id: 0,
        nonce: 1,
        kind: ProposalKind::ElectVersion {
            version: ReplicaVersion::new("2.0.0").unwrap(),
            sha256_hex: "b".repeat(64),
            urls: vec!["http://127.0.0.1:9/2.tar.zst".into()],
        },
    };
    let propose = ingress(
        network,
        &neuron(0),
        1,
        Operation::Propose {
            submission: types::codec::encode(&SignedSubmission::sign(submission, &neuron(0))),
        },
    );

    // The application subnet does not keep the registry.
    let (code, body) = post(&net, &url(0), &propose);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("does not keep the registry"), "{body}");

    // One neuron of three proposes through NNS node 1: recorded, open.
    let (code, body) = post(&net, &url(1), &propose);
    assert_eq!(code, 202, "{body}");
    let s = certified(&net, &url(1), &propose);
    assert_eq!(s["governance"]["proposed"]["proposal_id"], 1, "{s}");
    // A second neuron's vote, through NNS node 3, adopts and executes it.
    let ballot = Ballot {
        network,
        proposal_id: 1,
        neuron_id: 1,
        vote: Vote::Yes,
    };
    let vote = ingress(
        network,
        &neuron(1),
        1,
        Operation::Vote {
            ballot: types::codec::encode(&SignedBallot::sign(ballot, &neuron(1))),
        },
    );
    let (code, body) = post(&net, &url(3), &vote);
    assert_eq!(code, 202, "{body}");
    let s = certified(&net, &url(3), &vote);
    assert_eq!(s["governance"]["voted"]["status"], "executed", "{s}");
    // Every NNS node executed both.
    for i in 1..=4 {
        let s = certified(&net, &url(i), &vote);
        assert_eq!(s["governance"]["voted"]["proposal_id"], 1, "node {i}: {s}");
    }
}
