//! Membership changes on a live subnet, before the subnet reshares its key (issue 18's
//! first steps). `testnet prep --spare 2` registers two more node machines in no subnet;
//! their orchestrators run and report no subnet. Governance adds both and removes two
//! original members: the registry's membership moves at once, and the committee that
//! holds the threshold key (the four genesis nodes) keeps running consensus, since no
//! other committee holds it yet. The added nodes say they wait for the reshare, the
//! removed ones keep running, CUPs pinning the changed registry keep coming, and every
//! write acknowledged before and after reads back on every committee node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tests::testnet::{Net, nodes};

#[test]
fn membership_proposals_move_the_registry_while_the_key_holders_keep_the_subnet_running() {
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
        assert_eq!(n["alive"], true, "{n}");
    }
    let spare_waits = |s: &Value, what: &str| {
        nodes(s)[4..]
            .iter()
            .all(|n| n["decision"].as_str().is_some_and(|d| d.contains(what)))
    };
    net.wait("the spares unassigned", |s| spare_waits(s, "Unassigned"));
    assert!(
        nodes(&s)[4..].iter().all(|n| n["subnet_id"].is_null()),
        "{s}"
    );

    let before = tmp.path().join("before.jsonl");
    assert!(net.load(&before, 5) > 0, "no write acknowledged before");
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
    let s = net.status();
    let mut members: Vec<String> = s["subnets"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    members.sort();
    let mut expected = vec![id(2), id(3), id(4), id(5)];
    expected.sort();
    assert_eq!(members, expected, "{s}");
    let changed_at = s["registry_version"].as_u64().unwrap();
    net.wait("the added nodes waiting for the reshare", |s| {
        spare_waits(s, "not yet in its committee") && spare_waits(s, &subnet)
    });

    // The committee runs on past a CUP that pins the changed registry.
    let cup_pins = |i: usize| {
        net.get(format!(
            "{}/status",
            all[i]["orchestrator_url"].as_str().unwrap()
        ))
        .and_then(|o| o["cup"]["registry_version"].as_u64())
    };
    net.wait("a CUP pinning the change on every committee node", |_| {
        (0..4).all(|i| cup_pins(i) >= Some(changed_at))
    });
    let after = tmp.path().join("after.jsonl");
    assert!(net.load(&after, 5) > 0, "no write acknowledged after");
    for writes in [&before, &after] {
        let w = writes.to_str().unwrap();
        let report: Value =
            serde_json::from_str(&net.run(&["verify", "--dir", &net.d, "--writes", w, "--json"]))
                .unwrap();
        assert_eq!(report["lost"], serde_json::json!([]), "{report}");
    }
    let s = net.status();
    for n in &nodes(&s)[..4] {
        assert_eq!(n["alive"], true, "{n}");
        assert!(n["finalized_height"].as_u64() > Some(0), "{n}");
    }
}
