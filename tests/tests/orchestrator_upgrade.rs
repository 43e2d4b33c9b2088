//! An orchestrator, given a CUP that names a new version, replaces its replica and
//! re-executes itself from the new release package: a one-node subnet, a real registry
//! server, a package server, and governance deploying 2.0.0 while it runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crypto::ed25519::Ed25519KeyPair;
use rand::SeedableRng;
use registry::{
    client::RegistryClient,
    genesis::{NetworkParams, generate_network},
    governance::{ProposalKind, SignedSubmission, Submission},
};
use replica::{
    client::ReplicaClient,
    ingress::{Ingress, Operation, SignedIngress},
};
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use types::ReplicaVersion;

/// A guard against hangs, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(180);
/// How often the slow mirror sends a byte.
const TRICKLE: Duration = Duration::from_secs(2);
/// How soon a killed replica must be running again while a download trickles: its
/// restart backoff is half a second, the loop ticks every 200 ms; a loop held by the
/// download would not restart it until the download ended (never, at this rate).
const RESTART_PATIENCE: Duration = Duration::from_secs(20);

/// 200 with the whole length announced, then one byte of `body` every [`TRICKLE`].
fn trickle(body: Vec<u8>) -> axum::response::Response {
    let len = body.len();
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let byte = body.get(i).copied();
        async move {
            tokio::time::sleep(TRICKLE).await;
            byte.map(|b| {
                (
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b])),
                    i + 1,
                )
            })
        }
    });
    axum::response::Response::builder()
        .header("content-length", len)
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

use tests::free_port;

struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The typed client of the node's replica.
fn replica_client(client: &reqwest::Client, rec: &registry::genesis::GenesisNode) -> ReplicaClient {
    ReplicaClient::new(
        client.clone(),
        &format!("http://{}", rec.http_address),
        PATIENCE,
    )
}

async fn json(client: &reqwest::Client, url: String) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// Waits until the JSON at `url` (the orchestrator's status) satisfies `ok`.
async fn wait_until<F: Fn(&Value) -> bool>(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    logs: &Path,
    ok: F,
) -> Value {
    wait_for(what, logs, || json(client, url.to_string()), ok).await
}

/// Waits until what `fetch` reads satisfies `ok`; on timeout, fails with the node's logs.
async fn wait_for<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    logs: &Path,
    fetch: impl Fn() -> Fut,
    ok: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = fetch().await
            && ok(&v)
        {
            return v;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}\norchestrator log:\n{}\nreplica log:\n{}",
            std::fs::read_to_string(logs.join("orchestrator.log")).unwrap_or_default(),
            std::fs::read_to_string(logs.join("replica.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The first release's files, for a package.
fn first_release(bin: &Path) -> [(&'static str, PathBuf); 2] {
    [
        ("bin/replica", bin.join("replica")),
        ("bin/orchestrator", bin.join("orchestrator")),
    ]
}

/// Waits until the orchestrator runs `version` with a replica; returns its status.
async fn runs(n: &OneNode, version: &str) -> Value {
    wait_until(
        &n.client,
        &n.orchestrator_status(),
        &format!("the orchestrator to run {version}"),
        &n.node,
        |s| s["running_version"].as_str() == Some(version) && s["replica_pid"].as_u64().is_some(),
    )
    .await
}

/// A running one-node subnet at 1.0.0 under its orchestrator, with a registry server and
/// a package server holding 1.0.0 and 2.0.0.
struct OneNode {
    _dir: tempfile::TempDir,
    _procs: Procs,
    sha: Vec<String>,
    package_port: u16,
    reg_port: u16,
    root_key: String,
    net: registry::genesis::GeneratedNetwork,
    rec: registry::genesis::GenesisNode,
    node: PathBuf,
    images: PathBuf,
    packages: PathBuf,
    pid: u32,
    client: reqwest::Client,
}

impl OneNode {
    fn url(&self, v: &str) -> String {
        format!(
            "http://127.0.0.1:{}/packages/{v}.tar.zst",
            self.package_port
        )
    }
    fn replica(&self) -> ReplicaClient {
        replica_client(&self.client, &self.rec)
    }
    fn orchestrator_status(&self) -> String {
        format!("http://{}/status", self.rec.cup_address)
    }
}

async fn one_node() -> OneNode {
    one_node_with(9).await
}

/// A one-node subnet whose summary blocks come every `dkg_interval_length + 1` heights.
async fn one_node_with(dkg_interval_length: u64) -> OneNode {
    let bin = tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let root = root.as_path();

    // Two release packages of the same binaries, labeled 1.0.0 and 2.0.0.
    let packages = root.join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    let files = first_release(&bin);
    let files: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let mut sha = Vec::new();
    for v in ["1.0.0", "2.0.0"] {
        let out = packages.join(format!("{v}.tar.zst"));
        sha.push(
            release::build_package(&out, &ReplicaVersion::new(v).unwrap(), "test", &files).unwrap(),
        );
    }
    let package_port = free_port();
    let serve_dir = packages.clone();
    let trickle_dir = packages.clone();
    tokio::spawn(async move {
        let app =
            axum::Router::new()
                .route(
                    "/packages/{name}",
                    axum::routing::get(
                        move |axum::extract::Path(name): axum::extract::Path<String>| {
                            let p = serve_dir.join(name);
                            async move {
                                std::fs::read(p).map_err(|_| axum::http::StatusCode::NOT_FOUND)
                            }
                        },
                    ),
                )
                // A slow mirror: the whole length announced, then a byte every TRICKLE.
                .route(
                    "/trickle/{name}",
                    axum::routing::get(
                        move |axum::extract::Path(name): axum::extract::Path<String>| {
                            let p = trickle_dir.join(name);
                            async move { trickle(std::fs::read(p).unwrap_or_default()) }
                        },
                    ),
                );
        let l = tokio::net::TcpListener::bind(("127.0.0.1", package_port))
            .await
            .unwrap();
        axum::serve(l, app).await.unwrap();
    });
    let url = |v: &str| format!("http://127.0.0.1:{package_port}/packages/{v}.tar.zst");

    // A one-node subnet at 1.0.0.
    let params = NetworkParams {
        nodes: 1,
        neurons: 1,
        dkg_interval_length,
        unit_delay_ms: 200,
        initial_notary_delay_ms: 100,
        base_port: 1,
        replica_version: ReplicaVersion::new("1.0.0").unwrap(),
        package_sha256: sha[0].clone(),
        package_urls: vec![url("1.0.0")],
        genesis_time_ns: replica::now_ns(),
    };
    let mut net =
        generate_network(&params, &mut rand_chacha::ChaCha20Rng::seed_from_u64(3)).unwrap();
    let rec = &mut net.nodes[0].record;
    rec.consensus_address = format!("127.0.0.1:{}", free_port());
    rec.http_address = format!("127.0.0.1:{}", free_port());
    rec.cup_address = format!("127.0.0.1:{}", free_port());
    net.genesis.nodes[0] = rec.clone();
    let rec = rec.clone();
    net.write(root).unwrap();

    let mut procs = Procs(Vec::new());
    let reg_dir = root.join("registry");
    let ok = Command::new(bin.join("registry"))
        .args(["init", "--dir", reg_dir.to_str().unwrap()])
        .args(["--genesis", root.join("genesis.json").to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let reg_port = free_port();
    procs.0.push(
        Command::new(bin.join("registry"))
            .args(["serve", "--dir", reg_dir.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{reg_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let root_key = std::fs::read_to_string(reg_dir.join("registry_public_key.hex"))
        .unwrap()
        .trim()
        .to_string();

    // The node directory: keys (written above), node.toml, and the installed 1.0.0 image.
    let node = root.join("nodes").join("node-0");
    std::fs::write(
        node.join("node.toml"),
        format!(
            "registry_urls = [\"http://127.0.0.1:{reg_port}\"]\nregistry_root_key = \"{root_key}\"\nlisten = \"{}\"\npoll_interval_ms = 200\n",
            rec.cup_address
        ),
    )
    .unwrap();
    let images = node.join("images");
    let v1 = ReplicaVersion::new("1.0.0").unwrap();
    let package =
        release::VerifiedPackage::verify(&packages.join("1.0.0.tar.zst"), &sha[0]).unwrap();
    release::unpack(&package, &v1, &images).unwrap();
    release::switch_current(&images, &sha[0]).unwrap();
    let log = std::fs::File::create(node.join("orchestrator.log")).unwrap();
    let orchestrator = Command::new(images.join("current/bin/orchestrator"))
        .args(["--node-dir", node.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = orchestrator.id();
    procs.0.push(orchestrator);

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let replica = replica_client(&client, &rec);
    wait_for(
        "1.0.0 to finalize",
        &node,
        || async { replica.status().await.ok() },
        |s| s.finalized_height >= 3,
    )
    .await;
    let user = Ed25519KeyPair::from_seed(&[4; 32]);
    let root: crypto::ed25519::Ed25519PublicKey = root_key.parse().unwrap();
    let m = SignedIngress::sign(
        Ingress {
            network: types::NetworkId::from_registry_root_key(root.as_bytes()),
            sender: user.public_key(),
            nonce: 1,
            expiry_ns: replica::now_ns() + 60_000_000_000,
            operation: Operation::Put {
                key: "before".into(),
                value: b"the upgrade".to_vec(),
            },
        },
        &user,
    );
    replica.update(&m).await.unwrap();
    wait_for(
        "the write to execute",
        &node,
        || async { replica.query("before").await.ok() },
        |q| q.value.as_deref() == Some("the upgrade"),
    )
    .await;
    OneNode {
        _dir: dir,
        _procs: procs,
        sha,
        package_port,
        reg_port,
        root_key,
        net,
        rec,
        node,
        images,
        packages,
        pid,
        client,
    }
}

/// Governance: elect 2.0.0 (with this hash and these URLs) and deploy it to the subnet.
async fn deploy_2_0_0(n: &OneNode, sha256_hex: String, urls: Vec<String>) {
    deploy(n, "2.0.0", sha256_hex, urls, 0).await
}

/// Governance: elect `version` and deploy it to the subnet (proposal nonces from `nonce`).
async fn deploy(n: &OneNode, version: &str, sha256_hex: String, urls: Vec<String>, nonce: u64) {
    let (reg_port, root_key, net) = (n.reg_port, &n.root_key, &n.net);
    let key: crypto::ed25519::Ed25519PublicKey = root_key.parse().unwrap();
    let registry = RegistryClient::new(&format!("http://127.0.0.1:{reg_port}"), Some(key)).unwrap();
    let subnet = net.genesis.subnets[0].subnet_id;
    let v = ReplicaVersion::new(version).unwrap();
    for (i, kind) in [
        ProposalKind::ElectVersion {
            version: v.clone(),
            sha256_hex,
            urls,
        },
        ProposalKind::DeployVersion {
            subnet,
            version: v.clone(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let s = Submission {
            network: types::NetworkId::from_registry_root_key(key.as_bytes()),
            neuron_id: 0,
            nonce: nonce + i as u64,
            kind,
        };
        registry
            .submit(&SignedSubmission::sign(s, &net.neuron_keys[0]))
            .await
            .unwrap();
    }
}

/// Governance: retire `version` (proposal nonce `nonce`).
async fn retire(n: &OneNode, version: &str, nonce: u64) {
    let key: crypto::ed25519::Ed25519PublicKey = n.root_key.parse().unwrap();
    let registry =
        RegistryClient::new(&format!("http://127.0.0.1:{}", n.reg_port), Some(key)).unwrap();
    let s = Submission {
        network: types::NetworkId::from_registry_root_key(key.as_bytes()),
        neuron_id: 0,
        nonce,
        kind: ProposalKind::RetireVersion {
            versions: vec![ReplicaVersion::new(version).unwrap()],
        },
    };
    registry
        .submit(&SignedSubmission::sign(s, &n.net.neuron_keys[0]))
        .await
        .unwrap();
}

/// The `build` of the manifest beside the binary the replica process runs (the image it
/// was started from, whatever the layout of the images directory).
fn running_replica_build(status: &Value) -> String {
    let pid = status["replica_pid"].as_u64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let image = exe.parent().unwrap().parent().unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).unwrap()).unwrap();
    manifest["build"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_re_executes_itself_into_the_version_its_cup_names() {
    let n = one_node().await;
    deploy_2_0_0(&n, n.sha[1].clone(), vec![n.url("2.0.0")]).await;
    let (node, images, pid) = (n.node.clone(), &n.images, n.pid);
    let replica = n.replica();
    // The orchestrator re-executes itself (same pid) as 2.0.0 and runs replica 2.0.0.
    let s = runs(&n, "2.0.0").await;
    assert_eq!(s["cup"]["replica_version"].as_str(), Some("1.0.0"), "{s}");
    let cup_height = s["cup"]["height"].as_u64().unwrap();
    wait_for(
        "2.0.0 to finalize past the CUP",
        &node,
        || async { replica.status().await.ok() },
        |s| s.replica_version.as_str() == "2.0.0" && s.finalized_height > cup_height + 1,
    )
    .await;
    assert_eq!(
        std::fs::read_link(images.join("current")).unwrap(),
        PathBuf::from(&n.sha[1])
    );
    assert_eq!(
        s["running_package_sha256"].as_str(),
        Some(n.sha[1].as_str()),
        "{s}"
    );
    // Re-executed in place: the process the operator started is still the orchestrator.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&format!("{}/bin/orchestrator", n.sha[1])),
        "pid {pid} runs {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // The state came across: the value written on 1.0.0 is there on 2.0.0.
    let q = replica.query("before").await.unwrap();
    assert_eq!(q.value.as_deref(), Some("the upgrade"), "{q:?}");

    // A downgrade to the first release's code under a new id, 3.0.0, where the schema
    // allows it (2.0.0 kept schema 1): the rehearsal passes, the node switches, and the
    // state comes across again.
    let files = first_release(&tests::binaries());
    let files: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let out = n.packages.join("3.0.0.tar.zst");
    let sha3 = release::build_package(&out, &ReplicaVersion::new("3.0.0").unwrap(), "test", &files)
        .unwrap();
    deploy(&n, "3.0.0", sha3, vec![n.url("3.0.0")], 2).await;
    let s = runs(&n, "3.0.0").await;
    let cup_height = s["cup"]["height"].as_u64().unwrap();
    wait_for(
        "3.0.0 to finalize past its CUP",
        &node,
        || async { replica.status().await.ok() },
        |s| {
            s.replica_version.as_str() == "3.0.0"
                && s.state_schema == 1
                && s.finalized_height > cup_height + 1
        },
    )
    .await;
    let log = std::fs::read_to_string(node.join("orchestrator.log")).unwrap();
    assert!(log.contains("rehearsal passed"), "{log}");
    let q = replica.query("before").await.unwrap();
    assert_eq!(q.value.as_deref(), Some("the upgrade"), "{q:?}");
    promtool_accepts_every_process(&n).await;
}

/// Every process kind's `/metrics` (registry, orchestrator, replica), after governance,
/// two switches and executed updates, passes `promtool check metrics`, and holds the
/// series of each kind of metric (counters, labelled gauges, histograms).
async fn promtool_accepts_every_process(n: &OneNode) {
    let processes = [
        (
            format!("http://127.0.0.1:{}/metrics", n.reg_port),
            "registry_http_request_duration_seconds_count",
        ),
        (
            format!("http://{}/metrics", n.rec.cup_address),
            "orchestrator_upgrade_health{state=\"watching\"}",
        ),
        (
            format!("http://{}/metrics", n.rec.http_address),
            "replica_block_execution_duration_seconds_count",
        ),
    ];
    for (url, expected) in processes {
        let text = n
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(expected), "{url} has no {expected}:\n{text}");
        if expected.starts_with("orchestrator_") {
            // Switched twice, re-executed each time: the switch's time survives.
            let at = text
                .lines()
                .find_map(|l| l.strip_prefix("orchestrator_last_switch_timestamp_seconds "))
                .and_then(|v| v.parse::<f64>().ok());
            assert!(
                at.is_some_and(|t| t > 1e9),
                "{url}: the switch's time was lost: {at:?}"
            );
        }
        if let Err(e) = tests::promtool_check(&text) {
            panic!("{url}: {e}\n{text}");
        }
    }
}

/// Every URL of the new release is bad: the node stays on its version, says why in
/// `/status`, and tries again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_whose_package_cannot_be_fetched_fails_clearly_and_is_retried() {
    let n = one_node().await;
    // A missing file, then the 1.0.0 package (whose hash is not 2.0.0's).
    deploy_2_0_0(&n, n.sha[1].clone(), vec![n.url("missing"), n.url("1.0.0")]).await;
    let s = wait_until(
        &n.client,
        &n.orchestrator_status(),
        "the upgrade to fail",
        &n.node,
        |s| s["upgrade"]["state"].as_str() == Some("failed"),
    )
    .await;
    let error = s["upgrade"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("missing.tar.zst") && error.contains("1.0.0.tar.zst"),
        "{s}"
    );
    assert_eq!(s["running_version"].as_str(), Some("1.0.0"), "{s}");
    assert_eq!(
        s["upgrade"]["target_version"].as_str(),
        Some("2.0.0"),
        "{s}"
    );
    assert_eq!(
        std::fs::read_link(n.images.join("current")).unwrap(),
        PathBuf::from(&n.sha[0])
    );
    assert!(!n.images.join(&n.sha[1]).exists());
    // Another try later: the failure counter keeps growing.
    let metrics = format!("http://{}/metrics", n.rec.cup_address);
    let failures = || async {
        let text = n
            .client
            .get(&metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("orchestrator_download_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let start = Instant::now();
    let first = failures().await;
    loop {
        let now = failures().await;
        if now > first {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no retry after {first} failures"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The halted replica still answers queries.
    let q = n.replica().query("before").await.unwrap();
    assert_eq!(q.value.as_deref(), Some("the upgrade"), "{q:?}");
}

/// Issue 14: a version id retired and elected again with another package runs the new
/// package, not the image an earlier election left under the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_elected_again_with_another_package_runs_the_new_package() {
    let n = one_node().await;
    let bin = tests::binaries();
    let files = first_release(&bin);
    let files: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    // 2.0.0 as package A (build "test"), then 3.0.0.
    deploy_2_0_0(&n, n.sha[1].clone(), vec![n.url("2.0.0")]).await;
    let s = runs(&n, "2.0.0").await;
    assert_eq!(running_replica_build(&s), "test", "{s}");
    let v3 = n.packages.join("3.0.0.tar.zst");
    let sha3 = release::build_package(&v3, &ReplicaVersion::new("3.0.0").unwrap(), "test", &files)
        .unwrap();
    deploy(&n, "3.0.0", sha3, vec![n.url("3.0.0")], 2).await;
    runs(&n, "3.0.0").await;
    // 2.0.0 retired, elected again as package B, deployed.
    retire(&n, "2.0.0", 4).await;
    let b = n.packages.join("2.0.0-b.tar.zst");
    let sha_b = release::build_package(
        &b,
        &ReplicaVersion::new("2.0.0").unwrap(),
        "package B",
        &files,
    )
    .unwrap();
    assert_ne!(sha_b, n.sha[1]);
    deploy(&n, "2.0.0", sha_b.clone(), vec![n.url("2.0.0-b")], 5).await;
    let s = wait_until(
        &n.client,
        &n.orchestrator_status(),
        "the node to run 2.0.0 again",
        &n.node,
        |s| {
            s["running_version"].as_str() == Some("2.0.0")
                && s["replica_pid"].as_u64().is_some()
                && s["cup"]["replica_version"].as_str() == Some("3.0.0")
        },
    )
    .await;
    // Package B's replica runs, not package A's.
    assert_eq!(running_replica_build(&s), "package B", "{s}");
    assert_eq!(
        s["running_package_sha256"].as_str(),
        Some(sha_b.as_str()),
        "{s}"
    );
}

/// Issue 14: a mirror that sends a byte every few seconds does not stop the supervisor:
/// a killed replica is running again promptly while the download goes on, and `/status`
/// shows the download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_mirror_does_not_stop_the_supervisor() {
    // Summary blocks far apart: the download ahead of the switch has time to trickle.
    let n = one_node_with(400).await;
    let trickle_url = format!("http://127.0.0.1:{}/trickle/2.0.0.tar.zst", n.package_port);
    deploy_2_0_0(&n, n.sha[1].clone(), vec![trickle_url]).await;
    // The download ahead has started (some bytes in), and the replica runs.
    let s = wait_until(
        &n.client,
        &n.orchestrator_status(),
        "the download of 2.0.0 ahead of the switch to trickle in",
        &n.node,
        |s| {
            s["upgrade"]["download"]["bytes"].as_u64() >= Some(2)
                && s["replica_pid"].as_u64().is_some()
        },
    )
    .await;
    assert_eq!(s["upgrade"]["state"].as_str(), Some("downloading"), "{s}");
    assert_eq!(
        s["upgrade"]["download"]["version"].as_str(),
        Some("2.0.0"),
        "{s}"
    );
    assert_eq!(
        s["upgrade"]["download"]["sha256"].as_str(),
        Some(n.sha[1].as_str()),
        "{s}"
    );
    let killed = s["replica_pid"].as_u64().unwrap();
    let ok = Command::new("kill")
        .args(["-KILL", &killed.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let started = Instant::now();
    loop {
        let s = json(&n.client, n.orchestrator_status()).await;
        if let Some(s) = &s
            && s["replica_pid"].as_u64().is_some_and(|p| p != killed)
        {
            // Still downloading beside it.
            assert!(s["upgrade"]["download"]["bytes"].as_u64() >= Some(2), "{s}");
            break;
        }
        assert!(
            started.elapsed() < RESTART_PATIENCE,
            "the killed replica was not restarted within {RESTART_PATIENCE:?}: {s:?}\n{}",
            std::fs::read_to_string(n.node.join("orchestrator.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The restarted replica finalizes.
    let replica = n.replica();
    let before = replica.status().await.map_or(0, |s| s.finalized_height);
    wait_for(
        "the restarted replica to finalize",
        &n.node,
        || async { replica.status().await.ok() },
        |s| s.finalized_height > before + 2,
    )
    .await;
}

/// Issue 16: nothing outlives its owner. An orchestrator killed with SIGKILL cannot stop
/// its replica; the replica notices it was orphaned and stops by itself (it was left
/// running, parent 1, after every run of the test command before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stops_when_its_orchestrator_is_killed() {
    let mut n = one_node().await;
    let s = runs(&n, "1.0.0").await;
    let replica = s["replica_pid"].as_u64().unwrap() as i32;
    let orchestrator = n._procs.0.pop().unwrap();
    drop(Procs(vec![orchestrator]));
    let started = Instant::now();
    while tests::process_runs(replica) {
        assert!(
            started.elapsed() < RESTART_PATIENCE,
            "the replica (pid {replica}) still runs {RESTART_PATIENCE:?} after its orchestrator was killed\n{}",
            std::fs::read_to_string(n.node.join("replica.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(n.node.join("replica.log")).unwrap_or_default();
    assert!(
        log.contains("the process that started this replica exited"),
        "{log}"
    );
}
