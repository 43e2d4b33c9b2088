//! The overview built from fake registry and node answers, the rollout followed through
//! refreshes, an unreachable node and registry, and a slow node that must not hold up
//! the refresh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{
    answers::*,
    overview::{Overview, Reachability, VersionStatus, Watcher},
    rollout::{Origin, Step},
    sources::{self, Deadlines, Sources},
};
use registry::{
    api::{ElectedVersionView, ProposalView, SubnetView},
    governance::{ProposalKind, ProposalStatus},
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use types::{NodeId, ReplicaVersion, SubnetId};

fn v(s: &str) -> ReplicaVersion {
    ReplicaVersion::new(s).unwrap()
}
fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}
const SUBNET: SubnetId = SubnetId([7; 32]);

fn registry_read(deployed: &str, registry_version: u64) -> RegistryRead {
    let members: Vec<NodeId> = (1..=4).map(node).collect();
    RegistryRead {
        registry_version,
        network_id: "ab".repeat(32),
        proposals_open: 1,
        proposals_total: 2,
        subnets: vec![SubnetView {
            subnet_id: SUBNET,
            replica_version: v(deployed),
            members: members.clone(),
            dkg_interval_length: 9,
            unit_delay_ms: 200,
            initial_notary_delay_ms: 100,
            halt_at_cup_height: false,
            is_halted: false,
        }],
        versions: ["1.0.0", "2.0.0"]
            .iter()
            .map(|s| ElectedVersionView {
                version: v(s),
                sha256: "cd".repeat(32),
                urls: vec![format!("http://127.0.0.1:1/packages/{s}.tar.zst")],
                recalled: false,
            })
            .collect(),
        proposals: vec![
            proposal(1, ProposalStatus::Executed),
            proposal(2, ProposalStatus::Open),
        ],
        nodes: members
            .iter()
            .enumerate()
            .map(|(i, n)| NodeAddress {
                node_id: *n,
                subnet_id: Some(SUBNET),
                http_address: format!("10.0.0.{i}:8080"),
                cup_address: format!("10.0.0.{i}:8081"),
            })
            .collect(),
    }
}

fn proposal(id: u64, status: ProposalStatus) -> ProposalView {
    ProposalView {
        proposal_id: id,
        kind: "deploy_version".into(),
        status,
        yes: 2,
        no: 0,
        total: 3,
        failure_reason: None,
        proposer: 0,
        payload: ProposalKind::DeployVersion {
            subnet: SUBNET,
            version: v("2.0.0"),
        },
        created_ns: 5_000_000_000,
        deadline_ns: 9_000_000_000,
        decided_ns: None,
        executed_registry_version: None,
    }
}

/// A node's two answers: running `version`, with its orchestrator in `state` towards
/// `target`, the replica halting or halted, and a health state after a switch.
#[derive(Clone, Debug)]
struct Node {
    version: &'static str,
    state: &'static str,
    target: Option<&'static str>,
    halting: bool,
    halted: bool,
    health: Option<&'static str>,
}

const IDLE_V1: Node = Node {
    version: "1.0.0",
    state: "idle",
    target: None,
    halting: false,
    halted: false,
    health: None,
};

fn answers(i: u8, n: &Node) -> NodeAnswers {
    NodeAnswers {
        node_id: node(i),
        replica: Ok(ReplicaStatus {
            replica_version: v(n.version),
            node_id: node(i),
            finalized_height: 40,
            certified_height: 39,
            cup_height: 30,
            state_schema: Some(1),
            peers_connected: Some(3),
            halting: n.halting,
            halted: n.halted,
            storage_error: None,
            readiness: vec![],
        }),
        orchestrator: Ok(OrchestratorStatus {
            node_id: node(i),
            running_version: v(n.version),
            cup: None,
            upgrade: UpgradeSeen {
                state: n.state.into(),
                target_version: n.target.map(v),
                last_error: None,
                preflight: None,
                health: n.health.map(|h| HealthSeen {
                    state: h.into(),
                    reason: None,
                    switched_at_cup_height: 30,
                }),
            },
        }),
    }
}

fn down(i: u8) -> NodeAnswers {
    NodeAnswers {
        node_id: node(i),
        replica: Err("cannot connect: Connection refused (os error 111)".into()),
        orchestrator: Err("cannot connect: Connection refused (os error 111)".into()),
    }
}

fn all(n: &Node) -> Vec<NodeAnswers> {
    (1..=4).map(|i| answers(i, n)).collect()
}

/// The first proposal's status as the page reads it.
fn json_status(o: &Overview) -> String {
    serde_json::to_value(o).unwrap()["proposals"][0]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn row(o: &Overview, i: u8) -> &crate::overview::NodeRow {
    o.nodes.iter().find(|n| n.node_id == node(i)).unwrap()
}

#[test]
fn the_overview_shows_the_registry_and_every_node() {
    let mut w = Watcher::new("http://registry", true);
    // The first refresh knows no node yet: the registry read names them.
    assert!(w.known_nodes().is_empty());
    let o = w.observe(1_000, Ok(registry_read("1.0.0", 5)), vec![]);
    assert_eq!(w.known_nodes().len(), 4);
    assert!(o.registry.reachable && o.registry.verified);
    assert_eq!(o.nodes.len(), 4);
    assert!(
        o.nodes
            .iter()
            .all(|n| n.reachability == Reachability::Unknown)
    );

    let o = w.observe(2_000, Ok(registry_read("1.0.0", 5)), all(&IDLE_V1));
    assert_eq!(o.refresh, 2);
    for n in &o.nodes {
        assert_eq!(n.reachability, Reachability::Up);
        assert_eq!(n.running_version, Some(v("1.0.0")));
        assert_eq!(n.finalized_height, Some(40));
        let i = n.node_id.0[0] - 1;
        assert_eq!(
            n.replica.url,
            format!("http://10.0.0.{i}:8080/api/v1/status")
        );
        assert_eq!(n.orchestrator.url, format!("http://10.0.0.{i}:8081/status"));
    }
    assert_eq!(o.subnets[0].members[0].running_version, Some(v("1.0.0")));
    let status: BTreeMap<_, _> = o
        .versions
        .iter()
        .map(|r| (r.version.to_string(), (r.status, r.running_on)))
        .collect();
    assert_eq!(status["1.0.0"], (VersionStatus::Deployed, 4));
    assert_eq!(status["2.0.0"], (VersionStatus::Elected, 0));
    // Open proposals first.
    assert_eq!(o.proposals[0].proposal_id, 2);
    assert_eq!(o.proposals[0].status, ProposalStatus::Open);
    assert_eq!(json_status(&o), "open");
    assert!(
        o.proposals[0]
            .summary
            .starts_with("deploy 2.0.0 to subnet 07070707")
    );
    // Every node runs the deployed release: no rollout to show.
    assert!(o.rollouts.is_empty());
    // The JSON the page reads has the fields it reads.
    let json = serde_json::to_value(&o).unwrap();
    assert_eq!(json["nodes"][0]["running_version"], "1.0.0");
    assert_eq!(json["nodes"][0]["replica"]["ok"], true);
    assert_eq!(json["nodes"][0]["reachability"], "up");
    assert_eq!(json["versions"][0]["status"], "deployed");
}

#[test]
fn an_unreachable_node_says_since_when_and_keeps_its_last_answer() {
    let mut w = Watcher::new("http://registry", false);
    w.observe(1_000, Ok(registry_read("1.0.0", 5)), vec![]);
    w.observe(2_000, Ok(registry_read("1.0.0", 5)), all(&IDLE_V1));
    let mut a = all(&IDLE_V1);
    a[2] = down(3);
    let o = w.observe(3_000, Ok(registry_read("1.0.0", 5)), a.clone());
    let r = row(&o, 3);
    assert_eq!(r.reachability, Reachability::Unreachable);
    assert_eq!(r.unreachable_since_unix_ms, Some(3_000));
    assert!(!r.replica.ok && !r.orchestrator.ok);
    assert_eq!(r.replica.last_answer_unix_ms, Some(2_000));
    assert!(
        r.replica
            .error
            .as_deref()
            .unwrap()
            .contains("Connection refused")
    );
    // The last values stay, for the page to show as stale.
    assert_eq!(r.running_version, Some(v("1.0.0")));
    // The others are unaffected.
    assert_eq!(row(&o, 1).reachability, Reachability::Up);

    // Still down a second later: the streak keeps its start.
    let o = w.observe(4_000, Ok(registry_read("1.0.0", 5)), a);
    assert_eq!(row(&o, 3).unreachable_since_unix_ms, Some(3_000));

    // Only the orchestrator answers: partial, not unreachable.
    let mut a = all(&IDLE_V1);
    a[2].replica = Err("no answer within 2000 ms".into());
    let o = w.observe(5_000, Ok(registry_read("1.0.0", 5)), a);
    assert_eq!(row(&o, 3).reachability, Reachability::Partial);
    assert_eq!(row(&o, 3).unreachable_since_unix_ms, None);
    assert_eq!(row(&o, 3).replica.failing_since_unix_ms, Some(3_000));

    // Back: up again, nothing failing.
    let o = w.observe(6_000, Ok(registry_read("1.0.0", 5)), all(&IDLE_V1));
    assert_eq!(row(&o, 3).reachability, Reachability::Up);
    assert_eq!(row(&o, 3).replica.failing_since_unix_ms, None);
}

#[test]
fn an_unreachable_registry_keeps_its_last_read_and_the_nodes_are_still_polled() {
    let mut w = Watcher::new("http://registry", false);
    w.observe(1_000, Ok(registry_read("1.0.0", 5)), vec![]);
    let o = w.observe(2_000, Err("cannot connect".into()), all(&IDLE_V1));
    assert!(!o.registry.reachable);
    assert_eq!(o.registry.unreachable_since_unix_ms, Some(2_000));
    assert_eq!(o.registry.read_unix_ms, Some(1_000));
    assert_eq!(o.registry.registry_version, Some(5));
    assert_eq!(
        w.known_nodes().len(),
        4,
        "the nodes it named are still polled"
    );
    assert!(o.nodes.iter().all(|n| n.reachability == Reachability::Up));

    // Never reached: nothing to show but the error.
    let mut w = Watcher::new("http://registry", false);
    let o = w.observe(1_000, Err("cannot connect".into()), vec![]);
    assert!(!o.registry.reachable && o.nodes.is_empty() && o.subnets.is_empty());
    assert_eq!(o.registry.error.as_deref(), Some("cannot connect"));
}

#[test]
fn a_rollout_is_followed_from_the_deployment_to_every_node_healthy() {
    let mut w = Watcher::new("http://registry", false);
    w.observe(0, Ok(registry_read("1.0.0", 5)), vec![]);
    w.observe(1_000, Ok(registry_read("1.0.0", 5)), all(&IDLE_V1));
    let deployed = || Ok(registry_read("2.0.0", 6));
    let o = w.observe(2_000, deployed(), all(&IDLE_V1));
    assert_eq!(o.rollouts.len(), 1);
    let r = &o.rollouts[0];
    assert_eq!((r.version.as_str(), r.origin), ("2.0.0", Origin::Deployed));
    assert_eq!(r.previous_version, Some(v("1.0.0")));
    assert_eq!(r.started_unix_ms, 2_000);
    assert!(r.nodes.iter().all(|n| n.seen(Step::Deployed).is_none()));

    let ready = Node {
        state: "ready",
        target: Some("2.0.0"),
        ..IDLE_V1
    };
    w.observe(3_000, deployed(), all(&ready));
    let halting = Node {
        halting: true,
        ..ready.clone()
    };
    w.observe(4_000, deployed(), all(&halting));
    let halted = Node {
        halted: true,
        ..halting.clone()
    };
    // Node 4 is not seen halted: it switches between two polls.
    let mut a = all(&halted);
    a[3] = answers(4, &halting);
    w.observe(5_000, deployed(), a);
    let switched = Node {
        version: "2.0.0",
        state: "idle",
        target: None,
        halting: false,
        halted: false,
        health: Some("watching"),
    };
    w.observe(6_000, deployed(), all(&switched));
    let o = w.observe(
        7_000,
        deployed(),
        all(&Node {
            health: Some("healthy"),
            ..switched
        }),
    );
    assert_eq!(row(&o, 1).health.as_deref(), Some("healthy"));
    let r = &o.rollouts[0];
    assert_eq!(r.completed_unix_ms, Some(7_000));
    let times = |i: usize| -> Vec<(Option<u64>, bool)> {
        r.nodes[i]
            .steps
            .iter()
            .map(|s| (s.seen_unix_ms, s.inferred))
            .collect()
    };
    assert_eq!(
        times(0),
        vec![
            (Some(3_000), true),
            (Some(3_000), false),
            (Some(4_000), false),
            (Some(5_000), false),
            (Some(6_000), false),
            (Some(7_000), false),
        ]
    );
    assert_eq!(
        times(3)[3],
        (Some(6_000), true),
        "CUP seen only via the switch"
    );
    assert_eq!(r.nodes[0].cup_height, Some(30));
    // The versions table follows.
    let running: BTreeMap<_, _> = o
        .versions
        .iter()
        .map(|x| (x.version.to_string(), x.running_on))
        .collect();
    assert_eq!((running["1.0.0"], running["2.0.0"]), (0, 4));
}

#[test]
fn a_rollout_under_way_at_start_is_shown_and_one_node_down_does_not_complete_it() {
    let mut w = Watcher::new("http://registry", false);
    w.observe(0, Ok(registry_read("2.0.0", 6)), vec![]);
    let mut a = all(&IDLE_V1);
    a[0] = answers(
        1,
        &Node {
            version: "2.0.0",
            health: Some("healthy"),
            ..IDLE_V1
        },
    );
    a[3] = down(4);
    let o = w.observe(1_000, Ok(registry_read("2.0.0", 6)), a);
    assert_eq!(o.rollouts.len(), 1);
    let r = &o.rollouts[0];
    assert_eq!(r.origin, Origin::UnderWay);
    assert_eq!(r.previous_version, None);
    assert_eq!(r.nodes[0].seen(Step::Healthy), Some(1_000));
    assert_eq!(r.nodes[3].seen(Step::Deployed), None);
    assert_eq!(r.completed_unix_ms, None);
}

/// Answers from a table; node 2's replica never answers.
#[derive(Debug, Default)]
struct FakeSources {
    calls: Mutex<Vec<String>>,
}

impl Sources for FakeSources {
    async fn registry(&self) -> Result<RegistryRead, String> {
        Ok(registry_read("1.0.0", 5))
    }
    async fn replica(&self, address: String) -> Result<ReplicaStatus, String> {
        self.calls.lock().unwrap().push(address.clone());
        if address.starts_with("10.0.0.1:") {
            std::future::pending::<()>().await;
        }
        let i = address.as_bytes()[7] - b'0' + 1;
        answers(i, &IDLE_V1).replica
    }
    async fn orchestrator(&self, address: String) -> Result<OrchestratorStatus, String> {
        let i = address.as_bytes()[7] - b'0' + 1;
        answers(i, &IDLE_V1).orchestrator
    }
}

#[tokio::test]
async fn a_silent_node_costs_one_deadline_and_holds_up_no_one() {
    let fake = Arc::new(FakeSources::default());
    let nodes = registry_read("1.0.0", 5).nodes;
    let deadlines = Deadlines {
        node: Duration::from_millis(300),
        registry: Duration::from_millis(300),
    };
    let start = tokio::time::Instant::now();
    let (registry, answers) = sources::refresh(&fake, &nodes, deadlines).await;
    let took = start.elapsed();
    // One deadline, not one per node (generous above: a loaded test machine).
    assert!(
        took >= deadlines.node && took < 3 * deadlines.node,
        "{took:?}"
    );
    assert!(registry.is_ok());
    assert_eq!(answers.len(), 4);
    assert_eq!(fake.calls.lock().unwrap().len(), 4, "every node polled");
    let silent = &answers[1];
    assert_eq!(silent.node_id, node(2));
    assert_eq!(silent.replica, Err("no answer within 300 ms".to_string()));
    assert!(silent.orchestrator.is_ok());
    assert!(
        answers
            .iter()
            .filter(|a| a.node_id != node(2))
            .all(|a| a.replica.is_ok())
    );

    let mut w = Watcher::new("http://registry", false);
    w.observe(0, registry, vec![]);
    let o = w.observe(1_000, Ok(registry_read("1.0.0", 5)), answers);
    assert_eq!(row(&o, 2).reachability, Reachability::Partial);
}

/// A registry impostor: answers `/api/v1/status` with a well-formed status signed by
/// `key` (not the network's), and nothing else.
async fn forger(key: crypto::ed25519::Ed25519KeyPair) -> String {
    use axum::{http::HeaderValue, response::IntoResponse, routing::get};
    let body = serde_json::to_vec(&registry::api::StatusView {
        registry_version: 99,
        proposals_open: 0,
        proposals_total: 0,
        public_key: key.public_key().to_string(),
        network_id: types::NetworkId::from_registry_root_key(key.public_key().as_bytes()),
    })
    .unwrap();
    let sig = key.sign(
        types::domain::REGISTRY_RESPONSE,
        &registry::api::response_message("/api/v1/status", &body),
    );
    let app = axum::Router::new().route(
        "/api/v1/status",
        get(move || {
            let (body, sig) = (body.clone(), sig.to_string());
            async move {
                let mut r = body.into_response();
                r.headers_mut().insert(
                    registry::api::SIGNATURE_HEADER,
                    HeaderValue::from_str(&sig).unwrap(),
                );
                r
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// THREATS.md, "a forged registry answer to the dashboard": with the network's key the
/// dashboard refuses an answer someone else signed, shows why, and keeps what it last
/// read from the real registry.
#[tokio::test]
async fn a_forged_registry_answer_is_refused_and_the_last_good_read_is_kept() {
    use crypto::ed25519::Ed25519KeyPair;
    let network = Ed25519KeyPair::from_seed(&[1; 32]);
    let impostor = Ed25519KeyPair::from_seed(&[2; 32]);
    let url = forger(Ed25519KeyPair::from_seed(&[2; 32])).await;
    let read = |key: &Ed25519KeyPair| {
        let client = registry::client::RegistryClient::new(&url, Some(key.public_key())).unwrap();
        let sources = sources::HttpSources::new(client).unwrap();
        async move { sources.registry().await }
    };
    let refused = read(&network).await.unwrap_err();
    assert!(
        refused.contains("/api/v1/status is not signed by the registry's key"),
        "{refused}"
    );
    // Trusting the impostor's key, the status passes (the answer is well formed; only its
    // signer is wrong) and the read stops at the next path, which it does not serve.
    let past = read(&impostor).await.unwrap_err();
    assert!(past.contains("/api/v1/subnets"), "{past}");

    let mut w = Watcher::new(&url, true);
    w.observe(1_000, Ok(registry_read("1.0.0", 5)), all(&IDLE_V1));
    let o = w.observe(2_000, Err(refused.clone()), all(&IDLE_V1));
    assert_eq!(o.registry.error.as_deref(), Some(refused.as_str()));
    assert_eq!(
        o.registry.registry_version,
        Some(5),
        "the forged 99 never shows"
    );
    assert_eq!(o.subnets.len(), 1);
}
