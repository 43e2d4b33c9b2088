//! A release that passes its rehearsal and crashes at start strands the subnet: every
//! node halts at the upgrade's CUP, switches, and its new replica exits at once, again
//! and again. Governance recalls it: no node starts it again, although the stalled CUP
//! names it. Governance brings the subnet back: `nns propose recover-subnet` with the
//! stalled CUP's height and state hash (read from a node's `/status`) and a good
//! release. Every orchestrator prefers the recovery CUP, switches to the good release,
//! and the subnet takes writes again; every write acknowledged before the halt and after
//! the recovery reads back on every node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::time::Instant;
use tests::testnet::{Net, nodes};

#[test]
fn a_release_that_crashes_at_start_strands_the_subnet_and_recover_subnet_brings_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Net::new(&tests::binaries(), &dir);
    let d = net.d.clone();
    net.prep_up(4);
    let s = net.status();
    let registry = s["registry_url"].as_str().unwrap().to_string();
    let base_url = s["package_url_base"].as_str().unwrap().to_string();
    let subnet = s["subnets"][0]["subnet_id"].as_str().unwrap().to_string();
    let orchestrators: Vec<String> = nodes(&s)
        .iter()
        .map(|n| n["orchestrator_url"].as_str().unwrap().to_string())
        .collect();
    let orchestrator = |i: usize| {
        net.get(format!("{}/status", orchestrators[i]))
            .unwrap_or_default()
    };

    // Writes acknowledged before the upgrade.
    let before = tmp.path().join("before.jsonl");
    let acked = net.load(&before, 8);
    assert!(acked > 0, "no write acknowledged before the upgrade");

    // 2.0.0 passes every rehearsal and exits at start.
    let broken = dir.join("packages/2.0.0.tar.zst");
    let o = broken.to_str().unwrap();
    let out = net.run(&[
        "package",
        "--version",
        "2.0.0",
        "--out",
        o,
        "--next-release",
        "--broken",
        "crash-at-start",
    ]);
    let sha = out.lines().last().unwrap().trim().to_string();
    net.elect(
        &registry,
        "2.0.0",
        &sha,
        &[&format!("{base_url}/2.0.0.tar.zst")],
    );
    net.deploy(&registry, &subnet, "2.0.0");

    // Stranded: every orchestrator runs 2.0.0 and its replica keeps exiting.
    let stranded = |i: usize| {
        let o = orchestrator(i);
        o["running_version"] == "2.0.0"
            && o["upgrade"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("exit status: 1"))
            && o["upgrade"]["health"]["state"] == "unhealthy"
            && o["upgrade"]["health"]["replica_restarts"].as_u64() > Some(0)
    };
    net.wait("every node stranded on 2.0.0", |_| (0..4).all(stranded));
    let cups: Vec<Value> = (0..4).map(|i| orchestrator(i)["cup"].clone()).collect();
    let height = cups[0]["height"].as_u64().unwrap();
    let state_hash = cups[0]["state_hash"].as_str().unwrap().to_string();
    assert!(height > 0, "{cups:?}");
    for c in &cups {
        assert_eq!(c["height"].as_u64(), Some(height), "{cups:?}");
        assert_eq!(
            c["state_hash"].as_str(),
            Some(state_hash.as_str()),
            "{cups:?}"
        );
    }
    // Recall: the stalled CUP names 2.0.0, and each orchestrator would restart it again
    // and again; once governance recalls it, every node stops its replica and waits,
    // saying why, and starts it no more.
    net.govern(
        &registry,
        &["propose", "recall-version", "--version", "2.0.0"],
    );
    let holding = |i: usize| {
        let o = orchestrator(i);
        o["upgrade"]["state"] == "recalled"
            && o["replica_pid"].is_null()
            && o["upgrade"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("recalled"))
    };
    net.wait("every node holding instead of restarting 2.0.0", |_| {
        (0..4).all(holding)
    });
    // Several of the supervisor's restart backoffs later, still nothing runs.
    std::thread::sleep(std::time::Duration::from_secs(4));
    for i in 0..4 {
        assert!(holding(i), "node {i}: {}", orchestrator(i));
    }
    let versions = tests::testnet::run(&net.nns, &["--registry", &registry, "versions"]);
    assert!(versions.contains("2.0.0 (recalled)"), "{versions}");

    // Recovery: a good release (3.0.0), and a recovery CUP at the stalled height.
    let good = dir.join("packages/3.0.0.tar.zst");
    let good_sha = net.package("3.0.0", &good, true);
    let good_url = format!("{base_url}/3.0.0.tar.zst");
    net.elect(&registry, "3.0.0", &good_sha, &[&good_url]);
    let h = height.to_string();
    net.govern(
        &registry,
        &[
            "propose",
            "recover-subnet",
            "--subnet",
            &subnet,
            "--version",
            "3.0.0",
            "--height",
            &h,
            "--state-hash",
            &state_hash,
        ],
    );
    let adopted = Instant::now();
    net.wait("every node on 3.0.0 past the recovery CUP", |s| {
        nodes(s).iter().all(|n| {
            n["running_version"] == "3.0.0"
                && n["finalized_height"]
                    .as_u64()
                    .is_some_and(|f| f > height + 5)
        })
    });
    let took = adopted.elapsed();
    eprintln!(
        "recovered {} ms after adoption; {acked} writes acknowledged before the halt",
        took.as_millis()
    );
    // Writes are acknowledged again; all of them, and all from before, on every node.
    let after = tmp.path().join("after.jsonl");
    assert!(
        net.load(&after, 8) > 0,
        "no write acknowledged after the recovery"
    );
    for writes in [&before, &after] {
        let w = writes.to_str().unwrap();
        let report: Value =
            serde_json::from_str(&net.run(&["verify", "--dir", &d, "--writes", w, "--json"]))
                .unwrap();
        assert_eq!(report["lost"], serde_json::json!([]), "{report}");
    }
    net.run(&["down", "--dir", &d]);
}
