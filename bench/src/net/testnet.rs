//! A testnet for the bench, driven through the `testnet` and `nns` binaries as a developer
//! drives one: started in a temporary directory, governed, and taken down when dropped.

use super::*;

/// The directory with this build's binaries (the bench's own).
pub(super) fn bin_dir() -> Result<PathBuf, String> {
    std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "the bench binary has no directory".into())
}

pub(super) fn run(bin: &str, args: &[&str]) -> Result<String, String> {
    let path = bin_dir()?.join(bin);
    let out = Command::new(&path).args(args).output().map_err(|e| {
        format!(
            "{} (build every binary first: scripts/bench.sh does): {e}",
            path.display()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "{bin} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A running testnet; `testnet down` when dropped.
pub(super) struct Testnet {
    pub(super) dir: tempfile::TempDir,
    pub(super) replicas: Vec<String>,
    pub(super) orchestrators: Vec<String>,
    pub(super) registry: String,
    pub(super) package_base: String,
    pub(super) subnet: String,
    /// What updates are signed for: the hash of the registry's root key.
    pub(super) network: NetworkId,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = run("testnet", &["down", "--dir", &self.d()]);
    }
}

impl Testnet {
    /// `e`, with this testnet taken down and its directory kept: its logs say why.
    pub(super) fn kept(&mut self, e: String) -> String {
        let _ = run("testnet", &["down", "--dir", &self.d()]);
        match tempfile::tempdir() {
            Ok(empty) => {
                let path = std::mem::replace(&mut self.dir, empty).keep();
                format!("{e} (kept: {})", path.display())
            }
            Err(_) => e,
        }
    }

    pub(super) fn start(nodes: usize, hosts: Hosts) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("bench-testnet-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path().display().to_string();
        let n = nodes.to_string();
        // The application subnet alone on this machine's cores, as in every earlier run
        // in BENCHMARKS.md (the NNS subnet's 4 nodes would share them).
        let mut prep = vec![
            "prep",
            "--dir",
            &d,
            "--nodes",
            &n,
            "--base-port",
            "0",
            "--nns-nodes",
            "0",
        ];
        let one_way;
        if let Hosts::Netns { one_way_ms } = hosts {
            one_way = one_way_ms.to_string();
            prep.extend(["--hosts", "netns", "--latency-ms", &one_way]);
        }
        run("testnet", &prep)?;
        let network = registry::server::network_id(&dir.path().join("registry"))?;
        let mut net = Self {
            dir,
            replicas: vec![],
            orchestrators: vec![],
            registry: String::new(),
            package_base: String::new(),
            subnet: String::new(),
            network,
        };
        if let Err(e) = run("testnet", &["up", "--dir", &d]) {
            return Err(net.kept(e));
        }
        let s: Value = serde_json::from_str(&run("testnet", &["status", "--dir", &d, "--json"])?)
            .map_err(|e| format!("testnet status: {e}"))?;
        let strings = |field: &str| -> Vec<String> {
            s["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n[field].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        net.replicas = strings("replica_url");
        net.orchestrators = strings("orchestrator_url");
        net.registry = s["registry_url"].as_str().unwrap_or_default().to_string();
        net.package_base = s["package_url_base"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        net.subnet = s["subnets"][0]["subnet_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if net.replicas.len() != nodes || net.orchestrators.len() != nodes || net.subnet.is_empty()
        {
            return Err(format!(
                "testnet status did not describe {nodes} nodes: {s}"
            ));
        }
        Ok(net)
    }

    pub(super) fn d(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// A proposal by neuron 0, adopted with neuron 1's vote (of 3 neurons).
    pub(super) fn govern(&self, proposal: &[&str]) -> Result<(), String> {
        let key = |i: usize| {
            self.dir
                .path()
                .join("neurons")
                .join(format!("neuron-{i}.key"))
                .display()
                .to_string()
        };
        let mut args = vec!["--registry", &self.registry];
        let k0 = key(0);
        let k1 = key(1);
        let mut propose = args.clone();
        propose.extend(["--neuron-key", &k0, "propose"]);
        propose.extend(proposal);
        let id = run("nns", &propose)?;
        let id = id.trim_start_matches("proposal ").to_string();
        args.extend(["--neuron-key", &k1, "vote", "--proposal", &id, "--yes"]);
        let status = run("nns", &args)?;
        if !status.contains("adopted") && !status.contains("executed") {
            return Err(format!("proposal {id} was not adopted: {status}"));
        }
        Ok(())
    }

    /// Packages the next release as `version`, elects it and deploys it; returns when the
    /// deploy proposal was adopted.
    pub(super) fn deploy(&self, version: &str) -> Result<Instant, String> {
        let file = format!("{version}.tar.zst");
        let out = self.dir.path().join("packages").join(&file);
        let sha = run(
            "testnet",
            &[
                "package",
                "--version",
                version,
                "--out",
                &out.display().to_string(),
                "--next-release",
            ],
        )?;
        let sha = sha.lines().last().unwrap_or_default().to_string();
        let url = format!("{}/{file}", self.package_base);
        self.govern(&[
            "elect-version",
            "--version",
            version,
            "--sha256",
            &sha,
            "--url",
            &url,
        ])?;
        self.govern(&[
            "deploy-version",
            "--subnet",
            &self.subnet,
            "--version",
            version,
        ])?;
        Ok(Instant::now())
    }
}

pub(super) fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(70))
        .build()
        .map_err(|e| e.to_string())
}

pub(super) async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let r = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}
