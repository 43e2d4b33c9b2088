//! A kill -9 of the server in the middle of a stream of proposals and votes loses nothing
//! that was acknowledged; the replicator copies and verifies the registry.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::*;
use registry::{
    client::RegistryClient,
    governance::{
        Ballot, ProposalKind, ProposalStatus, SignedBallot, SignedSubmission, Submission, Vote,
    },
    replicator::{Replicator, ReplicatorError},
    store::{RegistryStore, RocksStore},
};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use types::{RegistryVersion, ReplicaVersion};

#[derive(Debug, Clone)]
struct Acked {
    id: u64,
    version: String,
    yes_from_1: bool,
    status_after_vote: Option<ProposalStatus>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_proposal_or_vote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = write_genesis(dir.path());
    let reg_dir = init(dir.path());
    let network = network_of(&reg_dir);
    let mut server = Server::start(&reg_dir, "127.0.0.1:0");
    let client = RegistryClient::new(&server.url, None).expect("client");
    let acked_count = Arc::new(AtomicUsize::new(0));

    // Kill the server with SIGKILL once some writes are acknowledged, while the stream goes on.
    let counter = acked_count.clone();
    let pid = server.child.id();
    let killer = std::thread::spawn(move || {
        while counter.load(Ordering::SeqCst) < 25 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        assert!(status.expect("kill").success());
    });

    let mut acked: Vec<Acked> = Vec::new();
    for i in 0..10_000u64 {
        let version = format!("5.0.{i}");
        let kind = ProposalKind::ElectVersion {
            version: ReplicaVersion::new(version.clone()).expect("valid"),
            sha256_hex: "e".repeat(64),
            urls: vec![format!("http://127.0.0.1:9/{i}.tar.gz")],
        };
        let submission = Submission {
            network,
            neuron_id: 0,
            nonce: i,
            kind,
        };
        let Ok(id) = client
            .submit(&SignedSubmission::sign(submission, &net.neuron_keys[0]))
            .await
        else {
            break;
        };
        acked.push(Acked {
            id,
            version,
            yes_from_1: false,
            status_after_vote: None,
        });
        acked_count.fetch_add(1, Ordering::SeqCst);
        // Every third proposal gets neuron 1's yes: adopted and executed.
        if i % 3 == 0 {
            let ballot = Ballot {
                network,
                proposal_id: id,
                neuron_id: 1,
                vote: Vote::Yes,
            };
            let Ok(r) = client
                .vote(&SignedBallot::sign(ballot, &net.neuron_keys[1]))
                .await
            else {
                break;
            };
            let last = acked.last_mut().expect("just pushed");
            last.yes_from_1 = true;
            last.status_after_vote = Some(r.status);
            acked_count.fetch_add(1, Ordering::SeqCst);
        }
    }
    killer.join().expect("killer");
    let _ = server.child.wait();
    // The killer fires after 25 acknowledged writes (proposals and votes together).
    let writes = acked_count.load(Ordering::SeqCst);
    assert!(
        writes >= 25,
        "only {writes} writes acknowledged before the kill"
    );
    assert!(
        acked.iter().any(|a| a.yes_from_1),
        "no executed proposal in the stream"
    );

    // Restart on the same directory (a new port).
    let server = Server::start(&reg_dir, "127.0.0.1:0");
    let client = RegistryClient::new(&server.url, None).expect("client");
    let proposals = client.proposals().await.expect("proposals");
    for a in &acked {
        let p = proposals
            .iter()
            .find(|p| p.proposal_id == a.id)
            .unwrap_or_else(|| panic!("lost proposal {a:?}"));
        assert!(p.yes >= 100, "{a:?}: {p:?}");
        if a.yes_from_1 {
            assert_eq!(p.yes, 200, "lost the vote of {a:?}");
            assert_eq!(Some(p.status), a.status_after_vote, "{a:?}");
            assert_eq!(p.status, ProposalStatus::Executed);
            let v = client
                .get(&format!("replica_version_{}", a.version), None)
                .await
                .expect("get");
            assert!(
                v.value.is_some(),
                "executed proposal {a:?} has no registry record"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicator_copies_verifies_and_survives_an_unreachable_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = write_genesis(dir.path());
    let reg_dir = init(dir.path());
    let network = network_of(&reg_dir);
    let server = Server::start(&reg_dir, "127.0.0.1:0");
    let root_key = std::fs::read_to_string(reg_dir.join("registry_public_key.hex")).expect("key");
    let root_key: crypto::ed25519::Ed25519PublicKey = root_key.trim().parse().expect("parses");

    // Some history: elect and deploy.
    let client = RegistryClient::new(&server.url, None).expect("client");
    for (i, kind) in [
        ProposalKind::ElectVersion {
            version: ReplicaVersion::new("2.0.0").expect("v"),
            sha256_hex: "b".repeat(64),
            urls: vec!["http://127.0.0.1:9/p".into()],
        },
        ProposalKind::DeployVersion {
            subnet: net.genesis.subnets[0].subnet_id,
            version: ReplicaVersion::new("2.0.0").expect("v"),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let id = client
            .submit(&SignedSubmission::sign(
                Submission {
                    network,
                    neuron_id: 0,
                    nonce: i as u64,
                    kind,
                },
                &net.neuron_keys[0],
            ))
            .await
            .expect("submit");
        client
            .vote(&SignedBallot::sign(
                Ballot {
                    network,
                    proposal_id: id,
                    neuron_id: 1,
                    vote: Vote::Yes,
                },
                &net.neuron_keys[1],
            ))
            .await
            .expect("vote");
    }

    let local_dir = dir.path().join("local");
    let local = Mutex::new(RocksStore::open(&local_dir).expect("open local"));
    let replicator = Replicator::new(
        RegistryClient::new(&server.url, Some(root_key)).expect("client"),
        true,
    )
    .expect("replicator");
    let progress = replicator.poll_once(&local).await.expect("poll");
    assert_eq!(progress.versions_added, 3);
    assert_eq!(progress.local_version, RegistryVersion::new(3));
    let key = format!("subnet_record_{}", net.genesis.subnets[0].subnet_id);
    for v in 1..=3 {
        let remote = client
            .get(&key, Some(RegistryVersion::new(v)))
            .await
            .expect("get");
        let mine = local
            .lock()
            .expect("lock")
            .get(&key, RegistryVersion::new(v))
            .expect("local get");
        assert_eq!(mine.map(hex::encode), remote.value_hex, "version {v}");
    }
    assert_eq!(
        replicator
            .poll_once(&local)
            .await
            .expect("poll again")
            .versions_added,
        0
    );

    // A replicator trusting another root key refuses what the server sends.
    let other = crypto::ed25519::Ed25519KeyPair::from_seed(&[5; 32]).public_key();
    let fooled = Replicator::new(
        RegistryClient::new(&server.url, Some(other)).expect("c"),
        true,
    )
    .expect("r");
    let fresh = Mutex::new(registry::store::MemoryStore::new());
    let err = fooled.poll_once(&fresh).await.expect_err("must refuse");
    assert!(
        matches!(
            err,
            ReplicatorError::Client(registry::client::ClientError::BadSignature { .. })
        ),
        "{err}"
    );
    assert_eq!(
        fresh.lock().expect("lock").latest_version(),
        RegistryVersion::ZERO
    );

    // With the server gone, polling fails and the local copy still answers.
    drop(server);
    assert!(matches!(
        replicator.poll_once(&local).await,
        Err(ReplicatorError::Client(_))
    ));
    let record = local
        .lock()
        .expect("lock")
        .get(&key, RegistryVersion::new(3))
        .expect("local get");
    assert!(record.is_some());
    drop(local);
    // And it persists across a restart of the node.
    let reopened = RocksStore::open(&local_dir).expect("reopen");
    assert_eq!(reopened.latest_version(), RegistryVersion::new(3));
}
