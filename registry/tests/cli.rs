//! The registry as a new user meets it: `registry init`, `registry serve`, and `nns`.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn elect_and_deploy_a_version_with_nns_changes_the_subnet_at_a_new_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = write_genesis(dir.path());
    let server = Server::start(&init(dir.path()), "127.0.0.1:0");
    let url = server.url.as_str();
    let subnet = net.genesis.subnets[0].subnet_id.to_string();
    let (k0, k1) = (neuron_key(dir.path(), 0), neuron_key(dir.path(), 1));
    assert_eq!(registry_version(url), 1);

    let sha = "b".repeat(64);
    let (code, out, err) = nns(
        url,
        &[
            "--neuron-key",
            s(&k0),
            "propose",
            "elect-version",
            "--version",
            "2.0.0",
            "--sha256",
            &sha,
            "--url",
            "http://127.0.0.1:9/next.tar.gz",
            "--url",
            "https://mirror.example/next.tar.gz",
        ],
    );
    assert_eq!((code, out.trim()), (0, "proposal 1"), "{err}");
    let (code, out, err) = nns(
        url,
        &["--neuron-key", s(&k1), "vote", "--proposal", "1", "--yes"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("executed"), "{out}");
    let (_, out, _) = nns(url, &["versions", "--json"]);
    let versions: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        versions
            .as_array()
            .expect("list")
            .iter()
            .any(|v| v["version"] == "2.0.0" && v["sha256"] == sha.as_str())
    );

    let (code, out, err) = nns(
        url,
        &[
            "--neuron-key",
            s(&k0),
            "--json",
            "propose",
            "deploy-version",
            "--subnet",
            &subnet,
            "--version",
            "2.0.0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["proposal_id"],
        2
    );
    let (code, _, err) = nns(
        url,
        &["--neuron-key", s(&k1), "vote", "--proposal", "2", "--yes"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(registry_version(url), 3);

    let (_, out, _) = nns(url, &["subnets", "--json"]);
    let subnets: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(subnets[0]["replica_version"], "2.0.0");
    // Every genesis node: the subnet's members in it, the spares in none.
    let (code, out, err) = nns(url, &["nodes", "--json"]);
    assert_eq!(code, 0, "{err}");
    let nodes: serde_json::Value = serde_json::from_str(&out).expect("json");
    let nodes = nodes.as_array().expect("a list");
    assert_eq!(nodes.len(), net.genesis.nodes.len());
    let spares: Vec<String> = net
        .spares
        .iter()
        .map(|s| s.record.node_id.to_string())
        .collect();
    assert_eq!(spares.len(), 2);
    for n in nodes {
        let spare = spares.iter().any(|s| n["node_id"] == s.as_str());
        let member = subnets[0]["members"]
            .as_array()
            .expect("members")
            .contains(&n["node_id"]);
        assert_eq!(member, !spare, "{n}");
        if spare {
            assert!(n["subnet_id"].is_null(), "{n}");
        } else {
            assert_eq!(n["subnet_id"], subnet.as_str(), "{n}");
        }
    }
    let (_, text, _) = nns(url, &["nodes"]);
    assert_eq!(text.lines().count(), nodes.len());
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(&format!("subnet {subnet}")))
            .count(),
        4,
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("subnet none")).count(),
        2,
        "{text}"
    );
    let key = format!("subnet_record_{subnet}");
    let at = |v: &str| {
        let (code, out, err) = nns(url, &["get", &key, "--at", v, "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["value"]["replica_version"]
            .clone()
    };
    assert_eq!(at("2"), "1.0.0");
    assert_eq!(at("3"), "2.0.0");

    let (_, out, _) = nns(url, &["proposal", "2", "--json"]);
    let p: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (
            p["proposal_id"].as_u64(),
            p["kind"].as_str(),
            p["status"].as_str()
        ),
        (Some(2), Some("deploy_version"), Some("executed"))
    );
    assert_eq!(
        (p["yes"].as_u64(), p["no"].as_u64(), p["total"].as_u64()),
        (Some(200), Some(0), Some(300))
    );
    assert!(p["failure_reason"].is_null());

    // Recall 2.0.0: `versions` shows it recalled (JSON and text).
    let (code, out, err) = nns(
        url,
        &[
            "--neuron-key",
            s(&k0),
            "propose",
            "recall-version",
            "--version",
            "2.0.0",
        ],
    );
    assert_eq!((code, out.trim()), (0, "proposal 3"), "{err}");
    let (code, _, err) = nns(
        url,
        &["--neuron-key", s(&k1), "vote", "--proposal", "3", "--yes"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = nns(url, &["versions", "--json"]);
    let versions: serde_json::Value = serde_json::from_str(&out).expect("json");
    let recalled = |v: &str| {
        versions
            .as_array()
            .expect("list")
            .iter()
            .find(|x| x["version"] == v)
            .map(|x| x["recalled"].clone())
    };
    assert_eq!(
        recalled("2.0.0"),
        Some(serde_json::json!(true)),
        "{versions}"
    );
    assert_eq!(
        recalled("1.0.0"),
        Some(serde_json::json!(false)),
        "{versions}"
    );
    let (_, out, _) = nns(url, &["versions"]);
    assert!(out.contains("2.0.0 (recalled)"), "{out}");

    // Membership: an unknown node is refused with no new version; both spares join.
    let before = registry_version(url);
    let add = |nodes: &[&str]| {
        let mut args = vec!["--neuron-key", s(&k0), "propose", "add-nodes"];
        args.extend(["--subnet", &subnet]);
        for n in nodes {
            args.extend(["--node", n]);
        }
        nns(url, &args)
    };
    let unknown = types::NodeId([3; 32]).to_string();
    let (code, _, err) = add(&[&unknown]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("node {unknown} is not registered")),
        "{err}"
    );
    assert_eq!(registry_version(url), before);
    let (code, out, err) = add(&[&spares[0], &spares[1]]);
    assert_eq!((code, out.trim()), (0, "proposal 4"), "{err}");
    let (code, _, err) = nns(
        url,
        &["--neuron-key", s(&k1), "vote", "--proposal", "4", "--yes"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(registry_version(url), before + 1);
    let (_, out, _) = nns(url, &["proposal", "4", "--json"]);
    let p: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(p["kind"], "add_nodes", "{p}");
    assert_eq!(p["status"], "executed", "{p}");
    let (_, text, _) = nns(url, &["nodes"]);
    assert!(!text.contains("subnet none"), "{text}");
}

#[test]
fn refused_proposals_and_forged_votes_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = write_genesis(dir.path());
    let server = Server::start(&init(dir.path()), "127.0.0.1:0");
    let url = server.url.as_str();
    let subnet = net.genesis.subnets[0].subnet_id.to_string();
    let (k0, k2) = (neuron_key(dir.path(), 0), neuron_key(dir.path(), 2));
    // An open proposal to vote on.
    let (code, _, err) = nns(
        url,
        &[
            "--neuron-key",
            s(&k0),
            "propose",
            "elect-version",
            "--version",
            "3.0.0",
            "--sha256",
            &"c".repeat(64),
            "--url",
            "http://127.0.0.1:9/p",
        ],
    );
    assert_eq!(code, 0, "{err}");

    let sha = "d".repeat(64);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "propose",
                "deploy-version",
                "--subnet",
                &subnet,
                "--version",
                "9.9.9",
            ],
            "version 9.9.9 is not elected",
        ),
        (
            vec!["propose", "retire-version", "--version", "1.0.0"],
            "version 1.0.0 is in use by subnet",
        ),
        (
            vec![
                "propose",
                "elect-version",
                "--version",
                "4",
                "--sha256",
                "abcd",
                "--url",
                "http://h/p",
            ],
            "64 lowercase hex",
        ),
        (
            vec![
                "propose",
                "elect-version",
                "--version",
                "4",
                "--sha256",
                &sha,
                "--url",
                "file:///tmp/p.tar.gz",
            ],
            "scheme \"file\" is not allowed",
        ),
    ];
    for (args, message) in cases {
        let version = registry_version(url);
        let count = proposal_count(url);
        let mut all = vec!["--neuron-key", s(&k0)];
        all.extend_from_slice(&args);
        let (code, out, err) = nns(url, &all);
        assert_eq!(code, 1, "{args:?} was not refused: {out}{err}");
        assert!(
            err.starts_with("error: ") && err.contains(message),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(registry_version(url), version, "{args:?}");
        assert_eq!(proposal_count(url), count, "{args:?}");
    }
    // Neuron 1's vote, signed with neuron 2's key.
    let (code, _, err) = nns(
        url,
        &[
            "--neuron-key",
            s(&k2),
            "--neuron",
            "1",
            "vote",
            "--proposal",
            "1",
            "--yes",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not by neuron 1's controller key"), "{err}");
    let (_, out, _) = nns(url, &["proposal", "1", "--json"]);
    let p: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (p["yes"].as_u64(), p["status"].as_str()),
        (Some(100), Some("open"))
    );
    assert_eq!(registry_version(url), 1);
    // Bad arguments never reach the server.
    let (code, _, err) = nns(
        url,
        &[
            "--neuron-key",
            s(&k0),
            "propose",
            "deploy-version",
            "--subnet",
            "xyz",
            "--version",
            "2",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--subnet"), "{err}");
    let (code, _, err) = nns(url, &["vote", "--proposal", "1", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--neuron-key"), "{err}");
}

#[test]
fn init_refuses_a_bad_genesis_and_a_second_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_genesis(dir.path());
    let reg_dir = init(dir.path());
    let (code, _, err) = run(
        REGISTRY,
        &[
            "init",
            "--dir",
            s(&reg_dir),
            "--genesis",
            s(&dir.path().join("genesis.json")),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds a registry"), "{err}");
    // A genesis whose subnet runs an unelected version.
    let text = std::fs::read_to_string(dir.path().join("genesis.json")).expect("read");
    let bad = text.replace(
        "\"replica_version\": \"1.0.0\"",
        "\"replica_version\": \"7.7.7\"",
    );
    assert_ne!(bad, text);
    std::fs::write(dir.path().join("bad.json"), bad).expect("write");
    let other = dir.path().join("other");
    let (code, _, err) = run(
        REGISTRY,
        &[
            "init",
            "--dir",
            s(&other),
            "--genesis",
            s(&dir.path().join("bad.json")),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("7.7.7, which is not elected"), "{err}");
    assert!(!other.exists(), "a refused init leaves nothing behind");
    // A genesis file larger than any real one is refused before it is read whole.
    let huge = dir.path().join("huge.json");
    let file = std::fs::File::create(&huge).expect("create");
    file.set_len(registry::genesis::MAX_GENESIS_BYTES + 1)
        .expect("grow");
    let (code, _, err) = run(
        REGISTRY,
        &["init", "--dir", s(&other), "--genesis", s(&huge)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("larger than"), "{err}");
    assert!(!other.exists(), "a refused init leaves nothing behind");
    // Serving an uninitialized directory says what to do.
    let (code, _, err) = run(
        REGISTRY,
        &["serve", "--dir", s(&other), "--listen", "127.0.0.1:0"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("registry.key"), "{err}");
}

#[test]
fn generate_genesis_writes_a_network_that_init_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("net");
    let (code, out, err) = run(
        REGISTRY,
        &[
            "generate-genesis",
            "--dir",
            s(&net),
            "--nodes",
            "7",
            "--seed",
            "3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("with 7 nodes"), "{out}");
    for i in 0..7 {
        for f in ["node.key", "bls.key", "low_share.key", "high_share.key"] {
            let p = net.join(format!("nodes/node-{i}/{f}"));
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&p).expect("exists").permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
    }
    let (code, _, err) = run(
        REGISTRY,
        &[
            "init",
            "--dir",
            s(&net.join("registry")),
            "--genesis",
            s(&net.join("genesis.json")),
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Same seed, same network; a second write into the same directory is refused.
    let (code, _, err) = run(
        REGISTRY,
        &["generate-genesis", "--dir", s(&net), "--seed", "3"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds"), "{err}");
    let (code, _, err) = run(
        REGISTRY,
        &[
            "generate-genesis",
            "--dir",
            s(&dir.path().join("x")),
            "--nodes",
            "0",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--nodes"), "{err}");
}

#[test]
fn nns_exit_codes_tell_a_refusal_from_a_bad_argument_from_an_unreachable_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_genesis(dir.path());
    let server = Server::start(&init(dir.path()), "127.0.0.1:0");
    let url = server.url.as_str();
    let k0 = neuron_key(dir.path(), 0);
    // 1: the registry says no (a vote on, or a read of, a proposal that does not exist).
    let (code, _, err) = nns(
        url,
        &["--neuron-key", s(&k0), "vote", "--proposal", "99", "--yes"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains("99"), "{err}");
    let (code, _, err) = nns(url, &["proposal", "99"]);
    assert_eq!(code, 1, "{err}");
    // 2: a bad argument, before anything is asked: a usage error (clap's), a URL that is
    // not one, a key file that is not there.
    for args in [
        vec!["--registry", url, "vote", "--proposal", "one", "--yes"],
        vec!["--registry", "not a url", "proposals"],
        vec![
            "--registry",
            url,
            "--neuron-key",
            "/nonexistent/key",
            "vote",
            "--proposal",
            "1",
            "--yes",
        ],
    ] {
        let (code, _, err) = run(NNS, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    // 3: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["proposals"],
        vec!["--neuron-key", s(&k0), "vote", "--proposal", "1", "--yes"],
    ] {
        let (code, _, err) = nns(&nowhere, &args);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(err.contains("unreachable"), "{err}");
    }
    // Each code is in --help.
    let (code, out, _) = nns(url, &["--help"]);
    assert_eq!(code, 0);
    for line in [
        "1 refused",
        "2 a bad argument",
        "3 the registry is unreachable",
    ] {
        assert!(out.contains(line), "{out}");
    }
}

/// An NNS node whose subnet is switching releases answers its status but refuses updates
/// with 503 ("subnet is upgrading", as a halted replica does): a proposal or vote sent
/// there ends with exit 3 and says to retry, and nothing is taken for a refusal.
#[test]
fn nns_says_retry_when_an_nns_node_is_upgrading() {
    use axum::{
        Json, Router,
        http::StatusCode,
        routing::{get, post},
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write_genesis(dir.path());
    let k0 = neuron_key(dir.path(), 0);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let network = types::NetworkId([7; 32]);
    let app = Router::new()
        .route(
            "/api/v1/status",
            get(move || async move {
                Json(serde_json::json!({ "finalized_height": 40, "network_id": network }))
            }),
        )
        .route(
            "/api/v1/update",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({ "error": "subnet is upgrading" })),
                )
            }),
        );
    rt.spawn(async move { axum::serve(listener, app).await });
    for args in [
        vec!["propose", "retire-version", "--version", "1.0.0"],
        vec!["vote", "--proposal", "1", "--yes"],
    ] {
        let (code, _, err) = nns(
            &url,
            &[&["--neuron-key", s(&k0), "--neuron", "0"], &args[..]].concat(),
        );
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(
            err.contains("subnet is upgrading") && err.contains("retry"),
            "{err}"
        );
    }
}
