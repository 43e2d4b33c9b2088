//! Membership changes on a live subnet, under load (issue 18): `testnet prep --spare 2`
//! registers two more node machines in no subnet; governance adds both, and the four
//! genesis nodes reshare the subnet's threshold keys to the six (their orchestrators
//! find the CUP that names them, sync the state and take part); governance removes two
//! of the original four and deploys a release in the same interval: one CUP names the
//! four and switches them to it, and the removed two wipe the subnet's state; then one
//! of the two remaining originals stops. The subnet keeps finalizing and
//! taking writes throughout (after the stop, three of four members: it needs the new
//! members' reshared keys), every acknowledged write reads back on every member, and
//! every CUP verifies with the genesis subnet public key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cup::Cup;
use serde_json::Value;
use std::path::Path;
use tests::testnet::{Net, nodes};

/// The height of the newest CUP a node holds (its replica's `cups/` and its
/// orchestrator's `cup.cup`) and the node ids it names as the committee (`None`: the
/// genesis committee), after checking every one of them against the genesis key.
fn cups_checked(node_dir: &Path, key: &crypto::bls::BlsPublicKey) -> (u64, Option<Vec<String>>) {
    let mut newest: Option<(u64, Option<Vec<String>>)> = None;
    // CUP files only (not a durable write's temporary one), and one pruned between the
    // listing and the read is skipped: the replica keeps a bounded history.
    let files = std::fs::read_dir(node_dir.join("cups"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".cup") && !n.starts_with('.'))
        })
        .chain(Some(node_dir.join("cup.cup")).filter(|p| p.exists()));
    for path in files {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let cup = Cup::decode(&bytes).unwrap();
        if let Cup::Signed(s) = &cup {
            s.verify(key)
                .expect("every CUP verifies with the genesis key");
        }
        let c = cup.content();
        let committee = c
            .committee
            .as_ref()
            .map(|m| m.nodes.iter().map(|n| n.to_string()).collect());
        if newest.as_ref().is_none_or(|(h, _)| c.height.get() > *h) {
            newest = Some((c.height.get(), committee));
        }
    }
    newest.unwrap_or((0, None))
}

/// What a node's CUPs say about a switch: the lowest CUP naming the committee `who`
/// (sorted) and the lowest running `version`, each by height and the other half.
#[derive(Clone, Debug, Default, PartialEq)]
struct Switch {
    named: Option<(u64, String)>,
    upgraded: Option<(u64, Option<Vec<String>>)>,
}

impl Switch {
    /// Takes in the CUPs a node holds now (a replica keeps a bounded history, so this is
    /// called while the switch happens).
    fn observe(&mut self, node_dir: &Path, who: &[String], version: &str) {
        for path in std::fs::read_dir(node_dir.join("cups"))
            .into_iter()
            .flatten()
        {
            let path = path.unwrap().path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".cup") || name.starts_with('.') {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let c = Cup::decode(&bytes).unwrap().content().clone();
            let h = c.height.get();
            let committee: Option<Vec<String>> = c
                .committee
                .as_ref()
                .map(|m| sorted(m.nodes.iter().map(|n| n.to_string()).collect()));
            // A CUP the core makes always names the version that runs from it.
            let runs = c
                .next_replica_version
                .as_ref()
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            if committee.as_deref() == Some(who) && self.named.as_ref().is_none_or(|(f, _)| h < *f)
            {
                self.named = Some((h, runs.clone()));
            }
            if runs == version && self.upgraded.as_ref().is_none_or(|(f, _)| h < *f) {
                self.upgraded = Some((h, committee));
            }
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn the_subnet_grows_to_six_shrinks_to_four_and_survives_a_stop_on_reshared_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Net::new(&tests::binaries(), &dir);
    net.prep_up_with(4, &["--spare", "2"]);
    let s = net.status();
    assert_eq!(net.status_code(), Some(0), "spares are not down: {s}");
    let registry = s["registry_url"].as_str().unwrap().to_string();
    let subnet = s["subnets"][0]["subnet_id"].as_str().unwrap().to_string();
    let all = nodes(&s).clone();
    assert_eq!(all.len(), 6, "{s}");
    let id = |i: usize| all[i]["node_id"].as_str().unwrap().to_string();
    for (i, n) in all.iter().enumerate() {
        assert_eq!(n["spare"], i >= 4, "{n}");
    }
    let genesis = std::fs::read_to_string(dir.join("genesis.json")).unwrap();
    let key = registry::genesis::Genesis::from_json(&genesis)
        .unwrap()
        .subnets[0]
        .high_threshold_key
        .group_key;
    let node_dir = |i: usize| dir.join("nodes").join(format!("node-{i}"));
    let height = |s: &Value, i: usize| nodes(s)[i]["finalized_height"].as_u64().unwrap_or(0);

    let writes = tmp.path().join("writes.jsonl");
    let load = net.spawn_load(&writes);

    // Both spares join: the CUP that ends the resharing names all six.
    net.govern(
        &registry,
        &[
            "propose",
            "add-nodes",
            "--subnet",
            &subnet,
            "--node",
            &id(4),
            "--node",
            &id(5),
        ],
    );
    let six = sorted((0..6).map(id).collect());
    let names = |i: usize, who: &Vec<String>| {
        cups_checked(&node_dir(i), &key).1.map(sorted).as_ref() == Some(who)
    };
    let s = net.wait(
        "a CUP naming the six on every node, the joiners finalizing",
        |s| (0..6).all(|i| names(i, &six)) && (4..6).all(|i| height(s, i) > 0),
    );
    let joined_at = height(&s, 4);
    net.wait("the joiners taking part past their CUP", |s| {
        (4..6).all(|i| height(s, i) > joined_at + 10)
    });

    // Two originals leave and the subnet upgrades, both proposed in one interval: the
    // replicas of the two leaving are paused (four of six cannot notarize), so no
    // summary can pin one proposal without the other; every orchestrator rehearses the
    // release meanwhile. The resharing's CUP names the other four and switches them to
    // 2.0.0 at once; the two wipe.
    let base_url = s["package_url_base"].as_str().unwrap().to_string();
    let sha = net.package("2.0.0", &dir.join("packages/2.0.0.tar.zst"), false);
    net.elect(
        &registry,
        "2.0.0",
        &sha,
        &[&format!("{base_url}/2.0.0.tar.zst")],
    );
    let paused: Vec<String> = (0..2)
        .map(|i| {
            let pid = std::fs::read_to_string(node_dir(i).join("replica.pid")).unwrap();
            pid.trim().to_string()
        })
        .collect();
    let signal = |sig: &str| {
        for pid in &paused {
            assert!(
                std::process::Command::new("kill")
                    .args([sig, pid])
                    .status()
                    .unwrap()
                    .success()
            );
        }
    };
    signal("-STOP");
    net.govern(
        &registry,
        &[
            "propose",
            "remove-nodes",
            "--subnet",
            &subnet,
            "--node",
            &id(0),
            "--node",
            &id(1),
        ],
    );
    net.deploy(&registry, &subnet, "2.0.0");
    net.wait("every orchestrator ready for 2.0.0", |s| {
        nodes(s).iter().all(|n| n["upgrade_state"] == "ready")
    });
    signal("-CONT");
    let four = sorted((2..6).map(id).collect());
    let switches: std::cell::RefCell<Vec<Switch>> = Default::default();
    switches.borrow_mut().resize(6, Switch::default());
    let observe = || {
        let mut all = switches.borrow_mut();
        for (i, sw) in all.iter_mut().enumerate().skip(2) {
            sw.observe(&node_dir(i), &four, "2.0.0");
        }
    };
    let removed_gone = |_: &Value| {
        observe();
        (0..2).all(|i| {
            [
                "replica",
                "cups",
                "cup.cup",
                "low_share.key",
                "high_share.key",
            ]
            .iter()
            .all(|f| !node_dir(i).join(f).exists())
        })
    };
    net.wait(
        "the removed nodes holding no state of the subnet",
        removed_gone,
    );
    net.wait("a CUP naming the four on each of them", |_| {
        observe();
        switches.borrow()[2..].iter().all(|sw| sw.named.is_some())
    });
    // One CUP, the same on the four, changes both the committee and the release.
    let switches = switches.into_inner();
    let at = switches[2].named.clone().unwrap();
    assert_eq!(at.1, "2.0.0", "{switches:?}");
    for (i, sw) in switches.iter().enumerate().skip(2) {
        assert_eq!(sw.named.as_ref(), Some(&at), "node {i}: {switches:?}");
        assert_eq!(
            sw.upgraded,
            Some((at.0, Some(four.clone()))),
            "node {i}: the release switched at another CUP than the committee: {switches:?}"
        );
    }
    net.wait("the four on 2.0.0", |s| {
        (2..6).all(|i| nodes(s)[i]["running_version"] == "2.0.0")
    });
    // The two originals that stay run on reshared shares: their genesis share files
    // are gone (a machine compromised later holds no share of the genesis polynomial).
    for i in 2..4 {
        for f in ["low_share.key", "high_share.key"] {
            assert!(!node_dir(i).join(f).exists(), "node {i} still holds {f}");
        }
    }
    let s = net.status();
    for i in 0..2 {
        assert!(
            nodes(&s)[i]["decision"]
                .as_str()
                .is_some_and(|d| d.contains("Unassigned") || d.contains("Leave")),
            "{s}"
        );
    }

    // One of the two remaining originals stops: three of four carry on, two of them on
    // shares they only hold from the resharing.
    net.run(&["stop-node", "--dir", &net.d, "--node", "2"]);
    let s = net.wait("the three others answering", |s| {
        (3..6).all(|i| height(s, i) > 0)
    });
    let at_stop = (3..6).map(|i| height(&s, i)).max().unwrap();
    net.wait("finalizing without node 2", |s| {
        (3..6).all(|i| height(s, i) > at_stop + 20)
    });
    let report = net.end_load_and_verify(load, &writes, at_stop);
    assert_eq!(
        report["nodes"], 3,
        "verified on the three live members: {report}"
    );
    for i in 3..6 {
        let (h, committee) = cups_checked(&node_dir(i), &key);
        assert!(h > 0);
        assert_eq!(committee.map(sorted), Some(four.clone()), "node {i}");
    }
}
