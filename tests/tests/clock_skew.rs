//! A node whose wall clock is a day ahead (its orchestrator and replica under libfaketime)
//! neither stops a 4-node subnet nor makes honest users' updates expire: its blocks, a
//! day in the future, are never notarized, the other three take its turns, and every
//! write the others acknowledged is on every node, the fast one included.
//!
//! Before block times were bounded by the validating node's clock, the same set-up
//! acknowledged 0 of 1,600 writes in 40 s: the fast node's blocks were finalized, the
//! chain's time jumped a day, and every update expired at execution.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};
use tests::testnet::{Net, nodes};

const DAY_MS: u64 = 24 * 3600 * 1000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_node_a_day_ahead_neither_stops_the_subnet_nor_expires_updates() {
    let bin = tests::binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Net::new(&bin, &dir);
    let d = net.d.clone();
    net.run(&[
        "prep",
        "--dir",
        &d,
        "--nodes",
        "4",
        "--base-port",
        "0",
        "--nns-nodes",
        "0",
    ]);
    net.run(&["up", "--dir", &d]);

    // Node 3 again, with its wall clock a day ahead.
    net.run(&["stop-node", "--dir", &d, "--node", "3"]);
    net.run(&[
        "start-node",
        "--dir",
        &d,
        "--node",
        "3",
        "--clock-offset",
        "+1d",
    ]);
    let s = net.status();
    let fast_url = nodes(&s)[3]["replica_url"].as_str().unwrap().to_string();
    // The fast node runs and follows the chain.
    let fast_status = || net.replica_status(&fast_url);
    net.wait("the fast node to finalize", |_| {
        fast_status().is_some_and(|s| s.finalized_height > 5)
    });

    // Offered: 40 writes a second for 40 s, spread over all four nodes (a loaded machine
    // sends fewer: each is sent after the last one's answer). The fast node refuses the
    // quarter sent to it (by its clock they expired a day ago); the rest are accepted and
    // must be acknowledged (certified and read back).
    let writes = tmp.path().join("writes.jsonl");
    let out = net.run(&[
        "load",
        "--dir",
        &d,
        "--rate",
        "40",
        "--duration",
        "40",
        "--out",
        writes.to_str().unwrap(),
        "--json",
    ]);
    let load: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("load printed {out:?}: {e}"));
    let count = |field: &str| load[field].as_u64().unwrap_or_else(|| panic!("{load}"));
    let (sent, accepted, acknowledged) = (
        count("writes_sent"),
        count("writes_accepted"),
        count("writes_acknowledged"),
    );
    eprintln!("load: {load}");
    assert!(sent >= 200, "the load sent only {sent}: {load}");
    // The three others accept theirs; the fast node accepts none.
    assert!(
        accepted >= sent * 3 / 5 && accepted <= sent - sent / 4,
        "{accepted} of {sent} sent were accepted: {load}"
    );
    assert!(
        acknowledged * 10 >= accepted * 9,
        "only {acknowledged} of {accepted} accepted writes were acknowledged: {load}"
    );

    // Every acknowledged write is on every node, the fast one too (it follows the chain
    // through the others' notarizations).
    let report = net.run(&[
        "verify",
        "--dir",
        &d,
        "--writes",
        writes.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(v["writes"], acknowledged, "{report}");
    assert_eq!(v["lost"].as_array().map(Vec::len), Some(0), "{report}");
    // And it really is a day ahead: it stamps what it executes with its own clock.
    let stamped = fast_status()
        .and_then(|s| s.last_payload)
        .map(|p| p.executed_at_ms);
    assert!(
        stamped.is_some_and(|t| t > now_ms() + DAY_MS - 3_600_000),
        "the fast node's clock is not a day ahead: {stamped:?} at {}",
        now_ms()
    );
    let s = net.status();
    let heights: Vec<u64> = nodes(&s)
        .iter()
        .map(|n| n["finalized_height"].as_u64().unwrap_or(0))
        .collect();
    let top = *heights.iter().max().unwrap();
    assert!(
        heights[3] + 20 >= top,
        "the fast node fell behind: {heights:?}"
    );
}
