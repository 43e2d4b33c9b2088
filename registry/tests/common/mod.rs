//! Real `registry` and `nns` processes on loopback.
#![allow(dead_code)]

use rand::SeedableRng;
use registry::genesis::{GeneratedNetwork, NetworkParams, generate_network};
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};
use types::ReplicaVersion;

pub const REGISTRY: &str = env!("CARGO_BIN_EXE_registry");
pub const NNS: &str = env!("CARGO_BIN_EXE_nns");

/// A network with 4 nodes, 2 spare nodes (in no subnet) and 3 equal neurons; writes `genesis.json` and
/// `neurons/neuron-<i>.key` under `dir`.
pub fn write_genesis(dir: &Path) -> GeneratedNetwork {
    let params = NetworkParams {
        nodes: 4,
        neurons: 3,
        dkg_interval_length: 9,
        unit_delay_ms: 300,
        initial_notary_delay_ms: 100,
        base_port: 21000,
        replica_version: ReplicaVersion::new("1.0.0").expect("valid"),
        package_sha256: "a".repeat(64),
        package_urls: vec!["http://127.0.0.1:9/first.tar.gz".into()],
        genesis_time_ns: 1_000,
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    let mut net = generate_network(&params, &mut rng).expect("generate");
    net.add_spares(2, params.base_port, &mut rng);
    std::fs::create_dir_all(dir.join("neurons")).expect("mkdir");
    std::fs::write(
        dir.join("genesis.json"),
        serde_json::to_string_pretty(&net.genesis).expect("json"),
    )
    .expect("write genesis");
    for (i, k) in net.neuron_keys.iter().enumerate() {
        k.write_to_file(&neuron_key(dir, i)).expect("write key");
    }
    net
}

pub fn neuron_key(dir: &Path, i: usize) -> PathBuf {
    dir.join("neurons").join(format!("neuron-{i}.key"))
}

pub fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `registry init` into `dir/registry`.
pub fn init(dir: &Path) -> PathBuf {
    let reg_dir = dir.join("registry");
    let genesis = dir.join("genesis.json");
    let (code, out, err) = run(
        REGISTRY,
        &["init", "--dir", s(&reg_dir), "--genesis", s(&genesis)],
    );
    assert_eq!(code, 0, "init failed: {out}{err}");
    assert!(out.contains("at version 1"), "{out}");
    reg_dir
}

/// The network of the registry in `reg_dir`: the hash of its root public key.
pub fn network_of(reg_dir: &Path) -> types::NetworkId {
    let text = std::fs::read_to_string(reg_dir.join("registry_public_key.hex")).expect("key");
    let key: crypto::ed25519::Ed25519PublicKey = text.trim().parse().expect("parses");
    types::NetworkId::from_registry_root_key(key.as_bytes())
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A running `registry serve`; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(reg_dir: &Path, listen: &str) -> Self {
        let mut child = Command::new(REGISTRY)
            .args(["serve", "--dir", s(reg_dir), "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn registry serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read address line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected: {line:?}"))
            .to_string();
        Self { child, url }
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `nns --registry URL ARGS...`.
pub fn nns(url: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--registry", url];
    all.extend_from_slice(args);
    run(NNS, &all)
}

pub fn registry_version(url: &str) -> u64 {
    let (code, out, err) = nns(url, &["registry-version"]);
    assert_eq!(code, 0, "{err}");
    out.trim().parse().expect("a number")
}

pub fn proposal_count(url: &str) -> usize {
    let (code, out, err) = nns(url, &["proposals", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .expect("json")
        .len()
}
