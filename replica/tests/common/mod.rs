//! The harness for tests with real replica processes on loopback: a generated network,
//! each node's registry copy, start/kill, status polling, signed updates, agreement
//! checks, metrics, and a lying HTTP proxy to put in front of a replica.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;

use crypto::ed25519::Ed25519KeyPair;
use cup::Cup;
use rand::SeedableRng;
use registry::{
    Registry,
    genesis::{GeneratedNetwork, NetworkParams, generate_network},
    local::registry_cup,
    store::RocksStore,
};
use replica::ingress::{Ingress, Operation, SignedIngress};
use serde_json::Value;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use types::{NetworkId, RegistryVersion, ReplicaVersion};

pub const NODES: usize = 4;
/// A guard against hangs, not a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(180);

pub use tests::free_port;

/// The registry key every node's `node.toml` names (there is no registry server here, but
/// the replicas read their network from it).
fn registry_key() -> crypto::ed25519::Ed25519PublicKey {
    Ed25519KeyPair::from_seed(&[42; 32]).public_key()
}

/// The network the replicas serve: what [`update`] signs for.
pub fn network() -> NetworkId {
    NetworkId::from_registry_root_key(registry_key().as_bytes())
}

pub struct Net {
    pub dir: tempfile::TempDir,
    pub net: GeneratedNetwork,
    pub cup: PathBuf,
    pub procs: Vec<Option<Child>>,
}

impl Net {
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join("nodes").join(format!("node-{i}"))
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.net.nodes[i].record.http_address)
    }

    pub fn start(&mut self, i: usize) {
        let cup = self.cup.clone();
        self.start_at(i, "1.0.0", &cup);
    }

    pub fn start_at(&mut self, i: usize, version: &str, cup: &std::path::Path) {
        let d = self.node_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("replica.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_replica"))
            .args(["--node-dir", d.to_str().unwrap()])
            .args(["--version", version])
            .args(["--cup", cup.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs[i] = Some(child);
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// Fails fast, with the logs, if a replica exited.
    pub fn assert_running(&mut self) {
        for i in 0..NODES {
            if let Some(c) = self.procs[i].as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("replica {i} exited with {status}\n{}", self.logs());
            }
        }
    }

    pub fn logs(&self) -> String {
        (0..NODES)
            .map(|i| {
                let text = std::fs::read_to_string(self.node_dir(i).join("replica.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- node {i} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
    }
}

/// A generated network with free loopback ports, each node's registry copy initialized
/// from the genesis, and the genesis CUP in a file.
pub fn setup() -> Net {
    setup_with(&[])
}

/// Where one node's registry copy says another node's HTTP API is: `(viewer, node,
/// address)`. The CUP built from the registry does not depend on addresses, so a viewer
/// with a redirected peer still joins the same subnet; it reaches that peer through
/// whatever listens at the address (a test's proxy).
pub type Redirect = (usize, usize, String);

/// [`setup`], with some nodes seeing some peers' HTTP APIs elsewhere.
pub fn setup_with(redirects: &[Redirect]) -> Net {
    setup_subnet(redirects, false)
}

/// [`setup`] for a network with an NNS subnet beside the application subnet, whose
/// nodes are the ones this `Net` runs (the application subnet's are registered only).
pub fn setup_nns() -> Net {
    setup_subnet(&[], true)
}

fn setup_subnet(redirects: &[Redirect], nns: bool) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let now = replica::now_ns();
    let params = NetworkParams {
        nodes: NODES,
        neurons: 1,
        dkg_interval_length: 9,
        unit_delay_ms: 200,
        initial_notary_delay_ms: 100,
        base_port: 1,
        replica_version: ReplicaVersion::new("1.0.0").unwrap(),
        package_sha256: "a".repeat(64),
        package_urls: vec!["http://127.0.0.1:9/1.tar.gz".into()],
        genesis_time_ns: now,
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(now);
    let mut net = generate_network(&params, &mut rng).unwrap();
    let mut subnet_index = 0;
    if nns {
        net.add_nns_subnet(&params, NODES, &mut rng).unwrap();
        // The NNS subnet's nodes are the ones run here: first, in `nodes/node-<i>`.
        std::mem::swap(&mut net.nodes, &mut net.nns);
        subnet_index = 1;
    }
    for n in net.nodes.iter_mut().chain(net.nns.iter_mut()) {
        n.record.consensus_address = format!("127.0.0.1:{}", free_port());
        n.record.http_address = format!("127.0.0.1:{}", free_port());
        n.record.cup_address = format!("127.0.0.1:{}", free_port());
        for g in net.genesis.nodes.iter_mut() {
            if g.node_id == n.record.node_id {
                *g = n.record.clone();
            }
        }
    }
    net.write(dir.path()).unwrap();
    let mut cup = None;
    for i in 0..NODES {
        let mut genesis = net.genesis.clone();
        for (_, node, address) in redirects.iter().filter(|(viewer, _, _)| *viewer == i) {
            let id = net.nodes[*node].record.node_id;
            for g in genesis.nodes.iter_mut().filter(|g| g.node_id == id) {
                g.http_address = address.clone();
            }
        }
        let mutations = genesis.mutations();
        let d = dir.path().join("nodes").join(format!("node-{i}"));
        std::fs::write(
            d.join("node.toml"),
            format!("registry_root_key = \"{}\"\n", registry_key()),
        )
        .unwrap();
        let mut reg = Registry::open(RocksStore::open(&d.join("registry")).unwrap()).unwrap();
        reg.init(&mutations, 3600 * 1_000_000_000).unwrap();
        let subnet = net.genesis.subnets[subnet_index].subnet_id;
        cup = Some(registry_cup(reg.store(), &subnet, RegistryVersion::new(1)).unwrap());
    }
    let cup_path = dir.path().join("genesis.cup");
    std::fs::write(&cup_path, Cup::Registry(cup.unwrap()).encode()).unwrap();
    Net {
        dir,
        net,
        cup: cup_path,
        procs: (0..NODES).map(|_| None).collect(),
    }
}

pub async fn status(client: &reqwest::Client, url: &str) -> Option<Value> {
    client
        .get(format!("{url}/api/v1/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

pub async fn wait_for<F: Fn(&Value) -> bool>(
    client: &reqwest::Client,
    net: &mut Net,
    nodes: &[usize],
    what: &str,
    ok: F,
) {
    let start = Instant::now();
    loop {
        net.assert_running();
        let mut all = true;
        for &i in nodes {
            match status(client, &net.url(i)).await {
                Some(s) if ok(&s) => {}
                _ => all = false,
            }
        }
        if all {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}\n{}",
            net.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An update signed for the replicas' [`network`].
pub fn update(user: &Ed25519KeyPair, nonce: u64, key: &str, value: &str) -> SignedIngress {
    update_for(network(), user, nonce, key, value)
}

pub fn update_for(
    network: NetworkId,
    user: &Ed25519KeyPair,
    nonce: u64,
    key: &str,
    value: &str,
) -> SignedIngress {
    SignedIngress::sign(
        Ingress {
            network,
            sender: user.public_key(),
            nonce,
            expiry_ns: replica::now_ns() + 120 * 1_000_000_000,
            operation: Operation::Put {
                key: key.into(),
                value: value.as_bytes().to_vec(),
            },
        },
        user,
    )
}

/// Submits updates round-robin over `nodes`; returns the values written per key.
pub async fn submit(
    client: &reqwest::Client,
    net: &Net,
    nodes: &[usize],
    range: std::ops::Range<u64>,
    tag: &str,
) -> BTreeMap<String, String> {
    let user = Ed25519KeyPair::from_seed(&[7; 32]);
    let mut written = BTreeMap::new();
    let mut pending = Vec::new();
    for n in range {
        // Phase b (from 1000 on) overwrites keys phase a wrote, after a finished.
        let key = format!("key-{:04}", n % 1000);
        let value = format!("{tag}-{n}");
        let m = update(&user, n, &key, &value);
        let url = format!("{}/api/v1/update", net.url(nodes[n as usize % nodes.len()]));
        let c = client.clone();
        pending.push(tokio::spawn(async move {
            c.post(url)
                .body(m.encode())
                .send()
                .await
                .map(|r| r.status())
        }));
        written.insert(key, value);
        if pending.len() >= 64 {
            for p in pending.drain(..) {
                assert_eq!(p.await.unwrap().unwrap(), reqwest::StatusCode::ACCEPTED);
            }
        }
    }
    for p in pending {
        assert_eq!(p.await.unwrap().unwrap(), reqwest::StatusCode::ACCEPTED);
    }
    written
}

/// Every node returns the written value for every key, and every certificate seen for
/// a height carries the same state hash.
pub async fn check_agreement(
    client: &reqwest::Client,
    net: &mut Net,
    written: &BTreeMap<String, String>,
) {
    let start = Instant::now();
    let mut last = String::new();
    'retry: loop {
        assert!(
            start.elapsed() < PATIENCE,
            "values never converged; last mismatch: {last}\n{}",
            net.logs()
        );
        let mut certified: BTreeMap<u64, String> = BTreeMap::new();
        for (key, value) in written {
            for i in 0..NODES {
                net.assert_running();
                let answer = async {
                    client
                        .get(format!("{}/api/v1/query?key={key}", net.url(i)))
                        .send()
                        .await?
                        .json::<Value>()
                        .await
                };
                let a = match answer.await {
                    Ok(a) => a,
                    Err(e) => {
                        last = format!("node {i}: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue 'retry;
                    }
                };
                if a["value"].as_str() != Some(value.as_str()) {
                    last = format!("node {i}, key {key}: expected {value}, got {a}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'retry;
                }
                let h = a["certified_height"].as_u64().unwrap();
                let hash = a["certificate"]["state_hash"]
                    .as_str()
                    .expect("a value comes with its certificate")
                    .to_string();
                let seen = certified.entry(h).or_insert_with(|| hash.clone());
                assert_eq!(*seen, hash, "two state hashes certified at height {h}");
            }
        }
        return;
    }
}

/// A replica's Prometheus metrics, by name.
pub async fn metrics(client: &reqwest::Client, url: &str) -> BTreeMap<String, u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.split_once(' ')?;
            Some((name.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Submits `pairs` as signed puts round-robin over `nodes`, with nonces from `first_nonce`
/// (a test's calls must not reuse nonces: the same update twice executes once).
pub async fn submit_pairs(
    client: &reqwest::Client,
    net: &Net,
    nodes: &[usize],
    first_nonce: u64,
    pairs: &[(String, String)],
) {
    let user = Ed25519KeyPair::from_seed(&[7; 32]);
    let mut pending = Vec::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        let m = update(&user, first_nonce + i as u64, key, value);
        let url = format!("{}/api/v1/update", net.url(nodes[i % nodes.len()]));
        let c = client.clone();
        pending.push(tokio::spawn(async move {
            c.post(url)
                .body(m.encode())
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    for p in pending {
        assert_eq!(p.await.unwrap().unwrap(), reqwest::StatusCode::ACCEPTED);
    }
}
