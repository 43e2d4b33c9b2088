//! Certified reads with real processes: a query answer from any replica verifies with the
//! subnet's public key alone (`replica::certified::verify_read`), for a value and for an
//! absent key; the same answer with its value changed in transit (by a proxy in front of
//! the replica, or by hand) does not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use replica::certified::{QueryAnswer, VerifyError, verify_read};
use std::{sync::atomic::Ordering, time::Duration};

async fn ask(client: &reqwest::Client, url: &str, key: &str) -> QueryAnswer {
    client
        .get(format!("{url}/api/v1/query?key={key}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_answer_verifies_and_one_changed_in_transit_does_not() {
    let mut net = setup();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let lies = proxy::start(listener, net.url(1));
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
    let pairs = vec![
        ("small".to_string(), "v1".to_string()),
        ("large".to_string(), "x".repeat(1000)),
    ];
    submit_pairs(&client, &net, &all, 0, &pairs).await;
    check_agreement(&client, &mut net, &pairs.iter().cloned().collect()).await;
    let key = net.net.genesis.subnets[0].high_threshold_key.group_key;

    for i in 0..NODES {
        let url = net.url(i);
        let a = ask(&client, &url, "small").await;
        assert!(a.witness.is_some() && a.certificate.is_some(), "{a:?}");
        assert_eq!(verify_read(&a, &key), Ok(Some(b"v1".to_vec())), "node {i}");
        let large = ask(&client, &url, "large").await;
        assert_eq!(
            verify_read(&large, &key),
            Ok(Some(vec![b'x'; 1000])),
            "node {i}"
        );
        let absent = ask(&client, &url, "never-written").await;
        assert_eq!(verify_read(&absent, &key), Ok(None), "node {i}");

        // The same answers, changed: the value, or absence claimed for a present key.
        let mut changed = a.clone();
        changed.value = Some("v2".into());
        assert!(
            matches!(
                verify_read(&changed, &key),
                Err(VerifyError::StateHashMismatch { .. })
            ),
            "node {i}"
        );
        let mut hidden = a.clone();
        hidden.value = None;
        assert!(verify_read(&hidden, &key).is_err(), "node {i}");
        let mut moved = absent.clone();
        moved.key = "small".into();
        assert!(verify_read(&moved, &key).is_err(), "node {i}");
    }

    // Through the lying proxy in front of node 1, the large value arrives changed.
    let lied = ask(&client, &proxy, "large").await;
    assert_eq!(lies.queries.load(Ordering::SeqCst), 1);
    assert_ne!(lied.value.as_deref(), Some("x".repeat(1000).as_str()));
    let err = verify_read(&lied, &key).expect_err("a changed value");
    assert!(
        matches!(err, VerifyError::StateHashMismatch { .. }),
        "{err}"
    );
    // The subnet key is what vouches: another key refuses even the genuine answer.
    let other = net.net.nodes[0].bls.public_key();
    let a = ask(&client, &net.url(0), "small").await;
    assert!(matches!(
        verify_read(&a, &other),
        Err(VerifyError::BadSignature(_))
    ));
}
