//! The `testnet` tool end to end: prep and up a 4-node network through orchestrators,
//! upgrade it with `nns` (elect, deploy, votes), watch every node switch, and take it down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

/// A guard against hangs, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(240);

fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(testnet: &Path, dir: &str) -> Value {
    serde_json::from_str(&run(testnet, &["status", "--dir", dir, "--json"])).unwrap()
}

/// A base port with 30 free ports above it (nothing listens there now).
fn base_port() -> u16 {
    loop {
        let base = tests::free_port();
        if base < 60000
            && (base..base + 30).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return base;
        }
    }
}

struct Down<'a>(&'a Path, String);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0)
            .args(["down", "--dir", &self.1])
            .output();
    }
}

#[test]
fn a_testnet_comes_up_upgrades_through_governance_and_goes_down() {
    let bin = tests::binaries();
    let (testnet, nns) = (bin.join("testnet"), bin.join("nns"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let d = dir.to_str().unwrap().to_string();
    let base = base_port().to_string();
    run(
        &testnet,
        &[
            "prep",
            "--dir",
            &d,
            "--nodes",
            "4",
            "--dkg-interval",
            "9",
            "--base-port",
            &base,
        ],
    );
    // prep refuses to overwrite.
    assert!(
        !Command::new(&testnet)
            .args(["prep", "--dir", &d])
            .status()
            .unwrap()
            .success()
    );
    let _down = Down(&testnet, d.clone());
    run(&testnet, &["up", "--dir", &d]);
    run(&testnet, &["up", "--dir", &d]); // safe to run twice
    let s = status(&testnet, &d);
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    for n in nodes {
        assert_eq!(n["alive"], true, "{s}");
        assert_eq!(n["running_version"], "1.0.0", "{s}");
    }

    // Node 3 is down through the whole upgrade (three of four nodes still make a quorum).
    run(&testnet, &["stop-node", "--dir", &d, "--node", "3"]);

    // Governance: package the next release, elect it, deploy it (two of three neurons).
    // Its first URL serves bytes with the wrong hash (the 1.0.0 package): nodes that
    // start there fall back to the second.
    let pkg = dir.join("packages").join("2.0.0.tar.zst");
    let sha = run(
        &testnet,
        &[
            "package",
            "--version",
            "2.0.0",
            "--out",
            pkg.to_str().unwrap(),
        ],
    );
    let sha = sha.lines().last().unwrap().trim().to_string();
    let registry = s["registry_url"].as_str().unwrap().to_string();
    let url = format!("{}/2.0.0.tar.zst", s["package_url_base"].as_str().unwrap());
    let bad_url = format!("{}/1.0.0.tar.zst", s["package_url_base"].as_str().unwrap());
    let key = |i: usize| {
        dir.join("neurons")
            .join(format!("neuron-{i}.key"))
            .display()
            .to_string()
    };
    let nns_as = |i: usize, args: &[&str]| {
        let mut all = vec!["--registry", &registry, "--neuron-key"];
        let k = key(i);
        all.push(&k);
        all.extend_from_slice(args);
        run(&nns, &all)
    };
    let id = |out: String| out.trim().trim_start_matches("proposal ").to_string();
    let p = id(nns_as(
        0,
        &[
            "propose",
            "elect-version",
            "--version",
            "2.0.0",
            "--sha256",
            &sha,
            "--url",
            &bad_url,
            "--url",
            &url,
        ],
    ));
    nns_as(1, &["vote", "--proposal", &p, "--yes"]);
    let subnet = s["subnets"][0]["subnet_id"].as_str().unwrap().to_string();
    let p = id(nns_as(
        0,
        &[
            "propose",
            "deploy-version",
            "--subnet",
            &subnet,
            "--version",
            "2.0.0",
        ],
    ));
    nns_as(1, &["vote", "--proposal", &p, "--yes"]);

    // Every running node switches, and the subnet finalizes on 2.0.0.
    let start = Instant::now();
    let up_to_date = |s: &Value, nodes: std::ops::Range<usize>| {
        s["nodes"].as_array().unwrap()[nodes].iter().all(|n| {
            n["running_version"] == "2.0.0"
                && n["finalized_height"].as_u64() > n["cup_height"].as_u64().map(|c| c + 1)
        })
    };
    let switched = loop {
        let s = status(&testnet, &d);
        if up_to_date(&s, 0..3) {
            break s;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the upgrade did not complete: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let cup = switched["nodes"][0]["cup_height"].as_u64().unwrap();
    assert!(cup > 0, "{switched}");

    // Node 3 comes back on 1.0.0: it learns the CUP from its peers, fetches 2.0.0,
    // re-executes into it and joins (its state at the CUP comes by state sync).
    run(&testnet, &["start-node", "--dir", &d, "--node", "3"]);
    let start = Instant::now();
    loop {
        let s = status(&testnet, &d);
        if up_to_date(&s, 3..4) {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "node 3 did not join at 2.0.0: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    run(&testnet, &["down", "--dir", &d]);
    let s = status(&testnet, &d);
    for n in s["nodes"].as_array().unwrap() {
        assert_eq!(n["alive"], false, "{s}");
    }
}
