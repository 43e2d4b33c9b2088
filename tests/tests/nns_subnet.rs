//! `testnet prep --nns-nodes` (issue 19): an NNS subnet of four orchestrator-run
//! replicas beside an application subnet of four, from one release package, and every node's registry
//! copy replicated from it, through a kill -9 of one of its nodes, and its upgrade of
//! itself under a stream of proposals and votes. Its first block installs
//! the genesis registry; `nns propose` and `nns vote` sent to two of its nodes execute
//! there and print their certified outcome; the application subnet refuses governance
//! calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crypto::ed25519::Ed25519KeyPair;
use registry::governance::{Ballot, SignedBallot, Vote};
use replica::ingress::{Ingress, Operation, SignedIngress};
use serde_json::Value;
use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};
use tests::testnet::{Net, PATIENCE, elect_args, nodes};
use types::NetworkId;

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
    net.prep_up_with(4, &["--nns-nodes", "4"]);
    let s = net.status();
    let all = nodes(&s).clone();
    // Nodes 0-3 make the application subnet, 4-7 the NNS subnet.
    assert_eq!(all.len(), 8, "{s}");
    for (i, n) in all.iter().enumerate() {
        assert_eq!(n["nns"], i >= 4, "{n}");
    }
    let url = |i: usize| all[i]["replica_url"].as_str().unwrap().to_string();
    let nns_subnet = all[4]["subnet_id"].clone();
    assert_ne!(all[0]["subnet_id"], nns_subnet, "two subnets: {s}");
    assert!(all[4..].iter().all(|n| n["subnet_id"] == nns_subnet), "{s}");
    assert!(
        all[..4]
            .iter()
            .all(|n| n["subnet_id"] == all[0]["subnet_id"]),
        "{s}"
    );

    let key = |i: usize| {
        dir.join("neurons")
            .join(format!("neuron-{i}.key"))
            .to_str()
            .unwrap()
            .to_string()
    };
    // `nns` against a node (--registry names it): exit code, stdout, stderr.
    let run_nns = |node: usize, first: &[&str], args: &[&str]| {
        let url = url(node);
        let out = std::process::Command::new(&net.nns)
            .args(["--registry", &url])
            .args(first)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    // As a neuron, given by its id.
    let nns = |node: usize, neuron: usize, args: &[&str]| {
        let (key, id) = (key(neuron), neuron.to_string());
        run_nns(node, &["--neuron-key", &key, "--neuron", &id], args)
    };
    let b64 = "b".repeat(64);
    let elect = elect_args("1.5.0", &b64, "http://127.0.0.1:9/1.5.tar.zst");
    // The application subnet does not keep the registry: refused (exit 1), nothing done.
    let (code, _, err) = nns(0, 0, &elect);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not keep the registry"), "{err}");
    // One neuron of three proposes through NNS node 4: recorded, open.
    let (code, out, err) = nns(4, 0, &elect);
    assert_eq!((code, out.as_str()), (Some(0), "proposal 1"), "{err}");
    // A second neuron's vote, through NNS node 6, adopts and executes it.
    let (code, out, err) = nns(6, 1, &["--json", "vote", "--proposal", "1", "--yes"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({ "proposal_id": 1, "status": "executed" })
    );
    // Every node's orchestrator replicates the registry from the NNS subnet, each page
    // checked with its key: the election (version 2) reaches them all, though the
    // registry server never saw it.
    net.wait("every node's registry copy at version 2", |s| {
        nodes(s)
            .iter()
            .all(|n| n["registry_version"].as_u64() >= Some(2))
    });
    // The registry server follows the NNS subnet, a read-only copy for tools: it reaches
    // the same version, serves governance's proposals, and refuses a proposal (exit 1).
    let s = net.wait("the registry server's copy at version 2", |s| {
        s["registry_version"].as_u64() >= Some(2)
    });
    let server = s["registry_url"].as_str().unwrap().to_string();
    let out = tests::testnet::run(
        &net.nns,
        &["--registry", &server, "--json", "proposal", "1"],
    );
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["status"], "executed", "{p}");
    let out = std::process::Command::new(&net.nns)
        .args([
            "--registry",
            &server,
            "--neuron-key",
            &key(0),
            "--neuron",
            "0",
        ])
        .args(["propose", "retire-version", "--version", "1.5.0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("follows the NNS subnet"), "{err}");
    // The same election again is refused by the registry, with its reason (exit 1).
    let (code, _, err) = nns(5, 2, &elect);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("1.5.0"), "{err}");

    // kill -9 of one NNS node, the one every node.toml names first, changes nothing:
    // governance goes on through the others, and every live copy follows by asking the
    // next NNS node. Restarted, the node catches up.
    net.kill_node(4);
    let c64 = "c".repeat(64);
    let (code, out, err) = nns(
        5,
        0,
        &elect_args("1.6.0", &c64, "http://127.0.0.1:9/1.6.tar.zst"),
    );
    assert_eq!((code, out.as_str()), (Some(0), "proposal 2"), "{err}");
    let (code, out, err) = nns(6, 1, &["vote", "--proposal", "2", "--yes"]);
    assert_eq!(
        (code, out.ends_with("executed")),
        (Some(0), true),
        "{out} {err}"
    );
    net.wait(
        "every live copy at version 3, with NNS node 4 killed",
        |s| {
            [0, 1, 2, 3, 5, 6, 7]
                .iter()
                .all(|&i| nodes(s)[i]["registry_version"].as_u64() >= Some(3))
        },
    );
    net.run(&["start-node", "--dir", &net.d, "--node", "4"]);
    net.wait("NNS node 4 back and caught up", |s| {
        nodes(s)[4]["registry_version"].as_u64() >= Some(3)
            && nodes(s)[4]["finalized_height"].as_u64().is_some()
    });

    // The NNS subnet upgrades itself: governance through its own nodes elects the next
    // release and deploys it to the NNS subnet; its nodes' orchestrators read that from
    // the registry they replicate from it, and switch at a CUP like any subnet's. The
    // application subnet stays on 1.0.0.
    let sha = net.package("2.0.0", &dir.join("packages/2.0.0.tar.zst"), true);
    let package_url = format!("{}/2.0.0.tar.zst", s["package_url_base"].as_str().unwrap());
    let adopt = |args: &[&str]| net.adopt_through(&url(4), &url(5), args);
    adopt(&elect_args("2.0.0", &sha, &package_url));
    let nns_subnet = nns_subnet.as_str().unwrap().to_string();
    // Under a stream of proposals and votes, each through another NNS node: every one is
    // executed, or refused with "retry" (exit 3) while the subnet switches.
    let stop = AtomicBool::new(false);
    let (s, (streamed, retries)) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let mut adopted = Vec::new();
            let mut retries = 0;
            for i in 0usize.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let version = format!("1.7.{i}");
                let d64 = "d".repeat(64);
                let elect = elect_args(&version, &d64, "http://127.0.0.1:9/1.7.tar.zst");
                let (code, out, err) = nns(5 + i % 3, 0, &elect);
                if code == Some(3) {
                    retries += 1;
                    continue;
                }
                assert_eq!(code, Some(0), "proposing {version}: {err}");
                let id = out.strip_prefix("proposal ").unwrap().to_string();
                let mut tries = 0;
                loop {
                    tries += 1;
                    let (code, out, err) =
                        nns(5 + (i + 1) % 3, 1, &["vote", "--proposal", &id, "--yes"]);
                    match code {
                        Some(0) if out.ends_with("executed") => break,
                        Some(3) => retries += 1,
                        // An earlier try went through after all.
                        Some(1) if tries > 1 && err.contains("executed") => break,
                        _ => panic!("the vote on proposal {id}: {code:?} {out} {err}"),
                    }
                }
                adopted.push(version);
            }
            (adopted, retries)
        });
        adopt(&[
            "propose",
            "deploy-version",
            "--subnet",
            &nns_subnet,
            "--version",
            "2.0.0",
        ]);
        let s = net.wait("the NNS subnet on 2.0.0", |s| {
            nodes(s)[4..].iter().all(|n| {
                n["running_version"] == "2.0.0" && n["finalized_height"].as_u64().is_some()
            })
        });
        // A few more on the new release.
        std::thread::sleep(std::time::Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        (s, stream.join().unwrap())
    });
    eprintln!(
        "{} elections adopted during the switch, {retries} calls answered \"retry\"",
        streamed.len()
    );
    assert!(streamed.len() >= 2, "{streamed:?}");
    assert!(
        nodes(&s)[..4]
            .iter()
            .all(|n| n["running_version"] == "1.0.0"),
        "{s}"
    );
    // On the new release, with governance's whole history: the next proposal takes the
    // next id, and its adoption reaches every node's copy.
    let before = nodes(&s)[0]["registry_version"].as_u64().unwrap();
    let (code, out, err) = nns(7, 0, &["propose", "retire-version", "--version", "1.5.0"]);
    assert_eq!(code, Some(0), "{err}");
    let id = out.strip_prefix("proposal ").unwrap().to_string();
    let (code, out, err) = nns(6, 1, &["vote", "--proposal", &id, "--yes"]);
    assert_eq!(
        (code, out.ends_with("executed")),
        (Some(0), true),
        "{out} {err}"
    );
    net.wait("every copy past the retirement", |s| {
        nodes(s)
            .iter()
            .all(|n| n["registry_version"].as_u64() > Some(before))
    });

    // Reads through an NNS node: every page checked with the NNS subnet's key (from
    // genesis, as node.toml names it); the neuron of a key is looked up there too.
    let genesis = registry::genesis::Genesis::read(&dir.join("genesis.json")).unwrap();
    let hex_key =
        |i: usize| hex::encode(genesis.subnets[i].high_threshold_key.group_key.to_bytes());
    let read = |node: usize, key: &str, args: &[&str]| run_nns(node, &["--nns-key", key], args);
    let (code, out, err) = read(5, &hex_key(1), &["--json", "registry-version"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["registry_version"].as_u64() > Some(before), "{v}");
    let (code, out, err) = read(6, &hex_key(1), &["--json", "versions"]);
    assert_eq!(code, Some(0), "{err}");
    let versions: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    // Every election adopted during the switch is there: the registry's history is
    // intact.
    let mut expected = vec!["1.0.0".to_string(), "1.6.0".into(), "2.0.0".into()];
    expected.extend(streamed);
    expected.sort();
    let mut names: Vec<String> = names.into_iter().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, expected, "1.5.0 was retired: {out}");
    let (code, out, err) = read(7, &hex_key(1), &["subnets"]);
    assert_eq!((code, out.lines().count()), (Some(0), 2), "{out} {err}");
    // Another subnet's key does not verify the pages: refused, nothing printed.
    let (code, out, err) = read(5, &hex_key(0), &["versions"]);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("does not verify"), "{err}");
    // Without --neuron, the key's neuron comes from the certified registry.
    let key0 = key(0);
    let (code, out, err) = read(
        4,
        &hex_key(1),
        &[
            "--neuron-key",
            &key0,
            "propose",
            "retire-version",
            "--version",
            "2.0.0",
        ],
    );
    // 2.0.0 runs on the NNS subnet: refused by the registry, after the lookup worked.
    assert_eq!(code, Some(1), "{out} {err}");
    assert!(err.contains("2.0.0"), "{err}");
    // Governance's proposals, certified too: every one from the first, contiguous, the
    // retirement executed.
    let (code, out, err) = read(4, &hex_key(1), &["--json", "proposals"]);
    assert_eq!(code, Some(0), "{err}");
    let proposals: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<u64> = proposals
        .iter()
        .map(|p| p["proposal_id"].as_u64().unwrap())
        .collect();
    let retirement: u64 = id.parse().unwrap();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert!(ids.len() as u64 >= retirement, "{ids:?}");
    let (code, out, err) = read(5, &hex_key(1), &["--json", "proposal", &id]);
    assert_eq!(code, Some(0), "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (p["proposal_id"].as_u64(), &p["status"]),
        (Some(retirement), &Value::from("executed")),
        "{p}"
    );
    let (code, _, err) = read(5, &hex_key(1), &["proposal", "100000"]);
    assert_eq!(code, Some(1), "{err}");

    // A raw update works as well: any node of the subnet holds the certified reply.
    let network = net.replica_status(&url(4)).unwrap().network_id;
    let neuron = |i: usize| Ed25519KeyPair::read_from_file(Path::new(&key(i))).unwrap();
    let ballot = Ballot {
        network,
        proposal_id: 1,
        neuron_id: 2,
        vote: Vote::Yes,
    };
    let vote = ingress(
        network,
        &neuron(2),
        1,
        Operation::Vote {
            ballot: types::codec::encode(&SignedBallot::sign(ballot, &neuron(2))),
        },
    );
    let (code, body) = post(&net, &url(7), &vote);
    assert_eq!(code, 202, "{body}");
    for i in 4..=7 {
        let s = certified(&net, &url(i), &vote);
        let reason = s["governance"]["refused"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.contains("executed"),
            "node {i}: a vote on a decided proposal: {s}"
        );
    }
}
