//! A testnet driven through the `testnet` and `nns` binaries, as a user would: what the
//! end-to-end tests of a whole network share.

// Test machinery: a failed step is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use replica::{certified::QueryAnswer, client::ReplicaClient, driver::StatusView};
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// A guard against hangs, not a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(240);

/// Runs `bin args`, asserting success; its standard output.
pub fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Debug)]
pub struct Net {
    pub testnet: PathBuf,
    pub nns: PathBuf,
    pub dir: PathBuf,
    pub d: String,
    pub rt: tokio::runtime::Runtime,
    pub http: reqwest::Client,
}

/// The most lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

impl Drop for Net {
    fn drop(&mut self) {
        // A failed test's directory goes with it: print the ends of the logs first, so
        // a failure seen only in CI can be read from its output.
        if std::thread::panicking() {
            let files_in = |dir: PathBuf| -> Vec<PathBuf> {
                std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .collect()
            };
            let mut names = files_in(self.dir.join("logs"));
            // Each replica's own log (its errors say why it stopped), beside its node.
            for node in files_in(self.dir.join("nodes")) {
                names.push(node.join("replica.log"));
            }
            names.sort();
            for path in names {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let errors: Vec<&&str> = lines
                    .iter()
                    .filter(|l| l.contains(" ERROR ") || l.contains("replica: error"))
                    .collect();
                if !errors.is_empty() {
                    eprintln!("--- the errors in {} ---", path.display());
                    for line in &errors[errors.len().saturating_sub(LOG_TAIL_LINES)..] {
                        eprintln!("{line}");
                    }
                }
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                eprintln!("--- the last lines of {} ---", path.display());
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
        let _ = Command::new(&self.testnet)
            .args(["down", "--dir", &self.d])
            .output();
    }
}

impl Net {
    /// A testnet in `dir` (not prepared yet), driven by the binaries in `bin`.
    pub fn new(bin: &Path, dir: &Path) -> Self {
        Self {
            testnet: bin.join("testnet"),
            nns: bin.join("nns"),
            d: dir.to_str().unwrap().to_string(),
            dir: dir.to_path_buf(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            // No idle connections: the runtime only runs inside `get`, so a pooled one can
            // go stale between calls.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    /// kill -9 of node `i`'s machine, as a power cut: its orchestrator's process group,
    /// then every process whose command line names its directory (its replica runs in
    /// a process group of its own).
    pub fn kill_node(&self, i: usize) {
        let pid = std::fs::read_to_string(self.dir.join(format!("pids/node-{i}.pid"))).unwrap();
        let killed = Command::new("kill")
            .args(["-9", "--", &format!("-{}", pid.trim())])
            .status()
            .unwrap();
        assert!(killed.success(), "node {i}");
        let needle = self.dir.join(format!("nodes/node-{i}"));
        let needle = needle.to_str().unwrap();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }

    /// Runs `testnet args` (asserting success); its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        run(&self.testnet, args)
    }

    /// `testnet status --json`: its report, also when it exits 3 because a node is down.
    pub fn status(&self) -> Value {
        let out = Command::new(&self.testnet)
            .args(["status", "--dir", &self.d, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success() || out.status.code() == Some(3),
            "testnet status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    /// `testnet status`'s exit code.
    pub fn status_code(&self) -> Option<i32> {
        Command::new(&self.testnet)
            .args(["status", "--dir", &self.d])
            .output()
            .unwrap()
            .status
            .code()
    }

    pub fn get(&self, url: String) -> Option<Value> {
        self.rt.block_on(get_json(&self.http, &url))
    }

    /// The status of the replica at `url` (`http://ADDR`), through its typed client;
    /// `None` when it does not answer as a replica would.
    pub fn replica_status(&self, url: &str) -> Option<StatusView> {
        self.rt.block_on(replica_status(&self.http, url))
    }

    /// The replica at `url`'s answer for `key`.
    pub fn query(&self, url: &str, key: &str) -> Option<QueryAnswer> {
        self.rt.block_on(replica(&self.http, url).query(key)).ok()
    }

    /// Waits until `done` holds for the testnet status; returns that status.
    pub fn wait(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if done(&s) {
                return s;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{what}: not within {PATIENCE:?}: {s}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Proposes as neuron 0 and adopts with neuron 1's vote (two of three).
    pub fn govern(&self, registry: &str, args: &[&str]) {
        let key = |i: usize| {
            self.dir
                .join("neurons")
                .join(format!("neuron-{i}.key"))
                .display()
                .to_string()
        };
        let as_neuron = |i: usize, args: &[&str]| {
            let k = key(i);
            let mut all = vec!["--registry", registry, "--neuron-key", &k];
            all.extend_from_slice(args);
            run(&self.nns, &all)
        };
        let out = as_neuron(0, args);
        let id = out.trim().trim_start_matches("proposal ").to_string();
        as_neuron(1, &["vote", "--proposal", &id, "--yes"]);
    }

    /// Proposes `args` as neuron 0 through the NNS node at `propose` and adopts it with
    /// neuron 1's vote through the one at `vote` (issue 19: governance as ingress),
    /// asserting both; the proposal id.
    pub fn adopt_through(&self, propose: &str, vote: &str, args: &[&str]) -> String {
        let as_neuron = |i: usize, url: &str, args: &[&str]| {
            let key = self.dir.join(format!("neurons/neuron-{i}.key"));
            let key = key.to_str().unwrap();
            let n = i.to_string();
            let mut all = vec!["--registry", url, "--neuron-key", key, "--neuron", &n];
            all.extend_from_slice(args);
            run(&self.nns, &all).trim().to_string()
        };
        let out = as_neuron(0, propose, args);
        let id = out.strip_prefix("proposal ").unwrap().to_string();
        let out = as_neuron(1, vote, &["vote", "--proposal", &id, "--yes"]);
        assert!(out.ends_with("executed"), "{out}");
        id
    }

    /// `testnet prep` of `nodes` nodes (DKG interval 9, free ports), then `up`.
    pub fn prep_up(&self, nodes: usize) {
        self.prep_up_with(nodes, &[]);
    }

    /// [`Self::prep_up`] with more `prep` flags (`--spare 2`).
    pub fn prep_up_with(&self, nodes: usize, more: &[&str]) {
        self.prep_with(nodes, more);
        self.run(&["up", "--dir", &self.d]);
    }

    /// `testnet prep` alone, as [`Self::prep_up_with`] runs it.
    pub fn prep_with(&self, nodes: usize, more: &[&str]) {
        let n = nodes.to_string();
        let d = self.d.as_str();
        let mut args = vec![
            "prep",
            "--dir",
            d,
            "--nodes",
            &n,
            "--dkg-interval",
            "9",
            // 0: `prep` picks free ports below the ephemeral range.
            "--base-port",
            "0",
        ];
        // Without an NNS subnet unless asked: most tests are about the application
        // subnet, and 4 more nodes would share its 2 cores.
        if !more.contains(&"--nns-nodes") {
            args.extend(["--nns-nodes", "0"]);
        }
        args.extend_from_slice(more);
        self.run(&args);
    }

    /// Elects `version` with the package `sha256` at `urls` (through [`Self::govern`]).
    pub fn elect(&self, registry: &str, version: &str, sha256: &str, urls: &[&str]) {
        let first = urls.first().copied().unwrap_or_default();
        let mut args = elect_args(version, sha256, first).to_vec();
        for u in urls.iter().skip(1) {
            args.extend(["--url", u]);
        }
        self.govern(registry, &args);
    }

    pub fn deploy(&self, registry: &str, subnet: &str, version: &str) {
        let args = ["propose", "deploy-version", "--subnet", subnet];
        self.govern(registry, &[&args[..], &["--version", version]].concat());
    }

    /// Runs `testnet load` at 20 writes/s for `secs` seconds; the writes it saw
    /// acknowledged (certified), which it wrote to `out`.
    pub fn load(&self, out: &Path, secs: u64) -> usize {
        let secs = secs.to_string();
        let ok = std::process::Command::new(&self.testnet)
            .args([
                "load",
                "--dir",
                &self.d,
                "--rate",
                "20",
                "--duration",
                &secs,
            ])
            .arg("--out")
            .arg(out)
            .status()
            .unwrap()
            .success();
        assert!(ok, "testnet load failed");
        std::fs::read_to_string(out).unwrap().lines().count()
    }

    pub fn package(&self, version: &str, out: &Path, next: bool) -> String {
        let o = out.to_str().unwrap();
        let mut args = vec!["package", "--version", version, "--out", o];
        if next {
            args.push("--next-release");
        }
        run(&self.testnet, &args)
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Net {
    /// Starts `testnet load` at 20 writes/s in the background (until SIGINT, at most
    /// 15 minutes), writing its acknowledged writes to `writes` as it ends.
    pub fn spawn_load(&self, writes: &Path) -> std::process::Child {
        Command::new(&self.testnet)
            .args([
                "load",
                "--dir",
                &self.d,
                "--rate",
                "20",
                "--duration",
                "900",
            ])
            .arg("--out")
            .arg(writes)
            .spawn()
            .unwrap()
    }

    /// Ends a `testnet load` child with SIGINT (it writes `writes` as it ends), checks
    /// that its acknowledged writes span the CUP at `cup`, and runs `testnet verify` on
    /// them: its report, in which no write may be lost.
    pub fn end_load_and_verify(
        &self,
        mut load: std::process::Child,
        writes: &Path,
        cup: u64,
    ) -> Value {
        assert!(
            Command::new("kill")
                .args(["-INT", &load.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        assert!(load.wait().unwrap().success(), "testnet load failed");
        let heights: Vec<u64> = std::fs::read_to_string(writes)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["height"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert!(
            heights.iter().any(|h| *h <= cup) && heights.iter().any(|h| *h > cup),
            "the load must span the upgrade (CUP at {cup}): {heights:?}"
        );
        let w = writes.to_str().unwrap();
        let report: Value =
            serde_json::from_str(&self.run(&["verify", "--dir", &self.d, "--writes", w, "--json"]))
                .unwrap();
        assert_eq!(report["writes"].as_u64(), Some(heights.len() as u64));
        assert_eq!(report["lost"], serde_json::json!([]), "{report}");
        report
    }
}

/// Whether this process runs as root (network namespaces and mounts need it; CI has it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

pub fn nodes(s: &Value) -> &Vec<Value> {
    s["nodes"].as_array().unwrap()
}

/// The typed client of the replica at `url`.
pub fn replica(http: &reqwest::Client, url: &str) -> ReplicaClient {
    ReplicaClient::new(http.clone(), url, Duration::from_secs(3))
}

pub async fn replica_status(http: &reqwest::Client, url: &str) -> Option<StatusView> {
    replica(http, url).status().await.ok()
}

pub async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// `propose elect-version` of `version`, its package's `sha256` at `url`.
pub fn elect_args<'a>(version: &'a str, sha256: &'a str, url: &'a str) -> [&'a str; 8] {
    [
        "propose",
        "elect-version",
        "--version",
        version,
        "--sha256",
        sha256,
        "--url",
        url,
    ]
}
