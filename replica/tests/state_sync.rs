//! State sync from a lying peer, with real processes: node 3's registry copy sends it to
//! node 0's HTTP API through a proxy that changes one byte in every state-sync chunk.
//! Node 3 falls behind a CUP, must fetch the state, and asks node 0 (the proxy) first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::{sync::atomic::Ordering, time::Duration};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_a_bad_chunk_is_dropped_at_that_chunk_and_another_peer_serves_the_state()
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap().to_string();
    let mut net = setup_with(&[(3, 0, proxy_addr)]);
    let lies = proxy::start(listener, net.url(0));
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

    // About 2.4 MB of state: more than two chunks, values the proxy can find.
    let big: Vec<(String, String)> = (0..40)
        .map(|i| (format!("big-{i:02}"), "x".repeat(60_000)))
        .collect();
    submit_pairs(&client, &net, &all, 0, &big).await;
    let mut written: std::collections::BTreeMap<String, String> = big.into_iter().collect();
    check_agreement(&client, &mut net, &written).await;

    // Node 3 misses a CUP; when it comes back it must fetch the state from its peers.
    net.kill(3);
    written.extend(submit(&client, &net, &[0, 1, 2], 1000..1100, "later").await);
    let target = status(&client, &net.url(0)).await.unwrap()["finalized_height"]
        .as_u64()
        .unwrap();
    wait_for(
        &client,
        &mut net,
        &[0, 1, 2],
        "a CUP node 3 has not seen",
        |s| s["finalized_height"].as_u64() >= Some(target + 12),
    )
    .await;
    net.start(3);
    let target = status(&client, &net.url(0)).await.unwrap()["finalized_height"]
        .as_u64()
        .unwrap();
    wait_for(
        &client,
        &mut net,
        &[3],
        "node 3 to catch up and finalize",
        |s| s["finalized_height"].as_u64() >= Some(target),
    )
    .await;
    check_agreement(&client, &mut net, &written).await;

    // Node 3 asked the liar for exactly one chunk per sync, the bad one, and took the
    // rest from an honest peer.
    let m = metrics(&client, &net.url(3)).await;
    let syncs = m.get("replica_state_syncs_total").copied().unwrap_or(0);
    assert!(syncs >= 1, "node 3 never state-synced: {m:?}");
    let (bad, asked) = (
        lies.chunks.load(Ordering::SeqCst),
        lies.chunk_requests.load(Ordering::SeqCst),
    );
    assert_eq!(
        (bad, asked),
        (syncs as usize, syncs as usize),
        "the lying peer sent {bad} bad chunks in {asked} chunk requests over {syncs} sync(s): \
         it must be dropped at its first bad chunk"
    );
    assert!(
        m["replica_state_sync_peers_dropped_total"] >= syncs,
        "{m:?}"
    );
    assert!(m["replica_state_sync_chunks_total"] >= 3 * syncs, "{m:?}");
    let log = std::fs::read_to_string(net.node_dir(3).join("replica.log")).unwrap();
    assert!(
        log.contains("state sync: dropped this peer"),
        "node 3's log"
    );
}
