//! `testnet`: a local multi-node network on loopback, booted through orchestrators.
//!
//! `prep` writes DIR (keys, genesis, registry, node directories with `node.toml` and the
//! first release installed, packages); `up` starts the registry server, the package
//! server and one orchestrator per node in the background (logs and pids under
//! `DIR/logs`, `DIR/pids`) and returns once blocks finalize; `status` reports every
//! node; `package` builds a release package of this build (`--next-release`: of the
//! next release, `replica-next` as its replica); `load` writes and `verify` checks the
//! acknowledged writes on every node; `down` stops everything.
//!
//! The binaries (`registry`, `replica`, `replica-next`, `orchestrator`) are taken from the
//! directory of the `testnet` binary itself: they are built together.

mod chaos;
mod demo;
mod hosts;
mod prep;
mod procs;
mod query;
mod scenario;
mod story;
mod wire;

use demo::*;
use prep::*;
use procs::*;

use clap::{Parser, Subcommand};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use rand::SeedableRng;
use registry::genesis::{NetworkParams, generate_network};
use replica::ingress::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};
use types::ReplicaVersion;

/// The first release's version id.
const FIRST_VERSION: &str = "1.0.0";
/// How long `up` waits for the first finalized blocks.
const UP_PATIENCE: Duration = Duration::from_secs(180);
/// `testnet status`'s exit code when a node it expects does not answer (the report is
/// printed all the same); 1 is any other failure, 2 a bad argument (clap's).
const EXIT_NODES_DOWN: u8 = 3;
/// How long `down` lets a process exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "testnet",
    about = "A local multi-node testnet on loopback.",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a ready-to-start network into DIR.
    Prep {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        args: PrepArgs,
        /// One JSON object: `{"dir","nodes","hosts","registry_url","package_url_base","netns_index"}`.
        #[arg(long)]
        json: bool,
    },
    /// Start the registry, the package server and the orchestrators in the background.
    Up {
        #[arg(long)]
        dir: PathBuf,
        /// One JSON object: `{"nodes","registry_url"}`.
        #[arg(long)]
        json: bool,
    },
    /// Every node's state. Exits 3 (after the report) if a node's orchestrator or
    /// replica does not answer, 1 on any other failure.
    Status {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build a release package of this build; prints its SHA-256 last.
    Package {
        #[arg(long)]
        version: String,
        #[arg(long)]
        out: PathBuf,
        /// Package the next release (state schema 2 with its migration, the append
        /// method, another artifact encoding) instead of the first.
        #[arg(long)]
        next_release: bool,
        /// Build it broken on purpose, for drills (never the default): its replica
        /// refuses every rehearsal (`fails-check`) or passes it and exits at start
        /// (`crash-at-start`).
        #[arg(long, value_enum)]
        broken: Option<replica::cli::Drill>,
        #[arg(long)]
        json: bool,
    },
    /// Check acknowledged writes (a `load --out` file) on every node: each value, its
    /// witness and certificate under the subnet's public key, and on nodes whose state is
    /// in schema 2, the checksum stored with it. Exits non-zero if any is missing,
    /// unverified or unmigrated.
    Verify {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        writes: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Read KEY from node I (default 0); with --verify, check the answer's witness and
    /// certificate with the subnet's public key (from DIR/genesis.json) and exit non-zero
    /// with the reason if they do not check.
    Query {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 0)]
        node: usize,
        #[arg(long)]
        verify: bool,
        #[arg(long)]
        json: bool,
    },
    /// Signed updates at RATE per second for DURATION seconds (or until SIGINT or
    /// SIGTERM); one JSON line per acknowledged write in FILE.
    Load {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long)]
        out: PathBuf,
        /// One JSON object at the end: `{"writes_acknowledged","writes_accepted",
        /// "writes_sent","out"}`.
        #[arg(long)]
        json: bool,
    },
    /// The whole story in a temporary directory: prep, up, load, package the next
    /// release, elect and deploy it with nns, watch the upgrade, check every write, down.
    Demo {
        #[arg(long)]
        json: bool,
        /// `upgrade` (the default): the next release under load. `recovery`: a release
        /// that fails preflight never halts the subnet, one that crashes at start strands
        /// it, and `recover-subnet` brings it back.
        #[arg(long, value_enum, default_value_t = Scenario::Upgrade)]
        scenario: Scenario,
        /// Where the nodes run: `loopback` (one host) or `netns` (a network namespace
        /// each, over the link emulator; needs root).
        #[arg(long, value_enum, default_value_t = Hosts::Loopback)]
        hosts: Hosts,
        #[command(flatten)]
        shape: hosts::Shape,
    },
    /// Stop node I's orchestrator and replica, keeping its directory.
    StopNode {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node: usize,
        /// One JSON object: `{"node","stopped"}`.
        #[arg(long)]
        json: bool,
    },
    /// Start node I's orchestrator again (from its installed release).
    StartNode {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node: usize,
        /// Run the node (orchestrator and replica) with its wall clock shifted, e.g.
        /// `+1d` or `-2h` (libfaketime's syntax; needs the faketime package): for
        /// testing what a node with a wrong clock does to the subnet.
        #[arg(long, allow_hyphen_values = true)]
        clock_offset: Option<String>,
        /// One JSON object: `{"node","started","clock_offset"}`.
        #[arg(long)]
        json: bool,
    },
    /// Stop everything `up` started; with `--hosts netns`, also remove every namespace and
    /// interface it made (also after a crash of `testnet` itself).
    Down {
        #[arg(long)]
        dir: PathBuf,
        /// One JSON object: `{"stopped","namespaces_removed"}`.
        #[arg(long)]
        json: bool,
    },
    /// (`--hosts netns`) Cut the links between groups of nodes: `--groups 0,1/2,3`. Nodes
    /// in no group keep reaching everyone; the registry and package host are never cut.
    Partition {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        groups: String,
        /// One JSON object: `{"partition"}` (the groups, as node indexes).
        #[arg(long)]
        json: bool,
    },
    /// (`--hosts netns`) Restore every link a partition cut.
    Heal {
        #[arg(long)]
        dir: PathBuf,
        /// One JSON object: `{"partition": []}`.
        #[arg(long)]
        json: bool,
    },
    /// (`--hosts netns`) Change the links' latency, jitter, loss and rate on a running
    /// network: every host's, or with `--node I` node I's only.
    Shape {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node: Option<usize>,
        #[command(flatten)]
        shape: hosts::Shape,
        /// One JSON object: `{"links"}` (every host's shape, the partition).
        #[arg(long)]
        json: bool,
    },
    /// N upgrades in a row on a 4-node `--hosts netns` testnet under load (needs root),
    /// each with faults drawn from SEED at random instants (SIGKILL of an orchestrator
    /// or a replica, a partition, a clock step, loss and latency bursts; one faulty node
    /// at most); checks every node on each new release past its CUP, one state hash per
    /// CUP height, and every acknowledged write on every node. A failure names the seed,
    /// the upgrade and its faults. `--json`: a final object with `seed`, `upgrades`,
    /// `writes_acknowledged`, `writes_lost` and each upgrade's `runs`.
    Chaos {
        #[arg(long)]
        upgrades: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// (Internal) the link emulator between a netns testnet's hosts.
    #[command(hide = true)]
    ServeLinks {
        #[arg(long)]
        dir: PathBuf,
    },
    /// (Internal) serve DIR/packages over HTTP.
    #[command(hide = true)]
    ServePackages {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        listen: String,
    },
}

/// What `testnet prep` (and `demo`) take.
#[derive(Clone, Debug, clap::Args)]
struct PrepArgs {
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// More node machines, registered (keys and records) in no subnet, their
    /// orchestrators running and waiting for an assignment (`nns propose add-nodes`).
    #[arg(long, default_value_t = 0)]
    spare: usize,
    /// Nodes of an NNS subnet beside the application subnet (after the spares): its
    /// replicated state is the registry and governance, installed from the genesis by
    /// its first block, it executes governance calls sent to its nodes as ingress, and
    /// every node replicates the registry from it, checked with its key (issue 19);
    /// the registry server follows it as a read-only copy for tools, and governance goes
    /// to its nodes. 0: no NNS subnet; the registry server decides, as before.
    #[arg(long, default_value_t = 4)]
    nns_nodes: usize,
    #[arg(long, default_value_t = 20)]
    dkg_interval: u64,
    #[arg(long, default_value_t = 3)]
    neurons: usize,
    /// Loopback: registry on P (default 31000), packages on P+1, the dashboard on P+2,
    /// node i on P+10+4i
    /// (consensus, HTTP, orchestrator); 0: a range where nothing listens now. Netns: the
    /// same ports on every
    /// host (default 4100).
    #[arg(long)]
    base_port: Option<u16>,
    /// A URL every node's orchestrator posts a JSON event to at each upgrade step
    /// (node.toml `webhooks`); repeat for more.
    #[arg(long = "webhook")]
    webhooks: Vec<String>,
    /// Where the nodes run: `loopback` (every process on this host's 127.0.0.1) or
    /// `netns` (each node, and the registry with the package server, in a network
    /// namespace of its own with its own address in 10.213.0.0/16, linked through the
    /// testnet's link emulator, which applies the shape below; needs root).
    #[arg(long, value_enum, default_value_t = Hosts::Loopback)]
    hosts: Hosts,
    #[command(flatten)]
    shape: hosts::Shape,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Hosts {
    Loopback,
    Netns,
}

/// `DIR/testnet.json`: what `prep` decided, for the other commands.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Layout {
    registry_port: u16,
    package_port: u16,
    /// The subnet's nodes at genesis: node `i` is `nodes/node-<i>`.
    nodes: Vec<NodeLayout>,
    /// `--spare` machines, in no subnet at genesis: spare `j` is node `nodes.len() + j`.
    #[serde(default)]
    spares: Vec<NodeLayout>,
    /// `--nns-nodes` machines, the NNS subnet's: NNS node `k` is node
    /// `nodes.len() + spares.len() + k`.
    #[serde(default)]
    nns: Vec<NodeLayout>,
    /// The NNS subnet's public key (hex), with `nns`.
    #[serde(default)]
    nns_key: Option<String>,
    /// The registry's and the package server's host.
    #[serde(default = "loopback_host")]
    infra_host: String,
    /// Set for `--hosts netns`.
    #[serde(default)]
    netns: Option<hosts::Netns>,
}

fn loopback_host() -> String {
    "127.0.0.1".into()
}

impl Layout {
    fn registry_url(&self) -> String {
        format!("http://{}:{}", self.infra_host, self.registry_port)
    }
    /// The NNS subnet's nodes' public APIs (none without an NNS subnet).
    fn nns_urls(&self) -> Vec<String> {
        self.nns
            .iter()
            .map(|n| format!("http://{}", n.http_address))
            .collect()
    }
    /// Where the dashboard listens: this machine (the operator's host).
    fn dashboard_url(&self) -> String {
        let host = match &self.netns {
            Some(n) => n.address(hosts::Host::Operator).to_string(),
            None => loopback_host(),
        };
        format!("http://{host}:{}", self.registry_port + 2)
    }
    fn package_url_base(&self) -> String {
        format!("http://{}:{}/packages", self.infra_host, self.package_port)
    }
    /// Every node machine, subnet nodes, spares, then NNS nodes, with its node index.
    fn machines(&self) -> impl Iterator<Item = (usize, &NodeLayout)> {
        self.nodes
            .iter()
            .chain(&self.spares)
            .chain(&self.nns)
            .enumerate()
    }

    /// `program` run on `host` (in its namespace with `--hosts netns`).
    fn command(&self, host: hosts::Host, program: &Path) -> Command {
        match &self.netns {
            Some(n) => n.command(host, program),
            None => Command::new(program),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeLayout {
    node_id: String,
    dir: PathBuf,
    consensus_address: String,
    http_address: String,
    orchestrator_address: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Prep {
            dir,
            mut args,
            json,
        } => {
            let base = match (args.base_port, args.hosts) {
                (Some(0), Hosts::Loopback) => free_base(args.nodes + args.spare + args.nns_nodes),
                (None, Hosts::Loopback) => Ok(31000),
                (None | Some(0), Hosts::Netns) => Ok(hosts::HOST_BASE_PORT),
                (Some(base), _) => Ok(base),
            };
            base.and_then(|base| {
                args.base_port = Some(base);
                prep(&dir, &args)
            })
            .map(|summary| report(json, &summary))
        }
        Cmd::Up { dir, json } => up(&dir).map(|summary| report(json, &summary)),
        Cmd::Status { dir, json } => match status(&dir, json) {
            Ok(down) if !down.is_empty() => {
                eprintln!("testnet: nodes down (orchestrator or replica not answering): {down:?}");
                return ExitCode::from(EXIT_NODES_DOWN);
            }
            r => r.map(|_| ()),
        },
        Cmd::Package {
            version,
            out,
            next_release,
            broken,
            json,
        } => package(&version, &out, next_release, broken).map(|sha| {
            report(
                json,
                &json!({"summary": sha, "version": version, "sha256": sha, "path": out.display().to_string()}),
            )
        }),
        Cmd::Verify { dir, writes, json } => verify(&dir, &writes, json),
        Cmd::Query {
            dir,
            key,
            node,
            verify,
            json,
        } => query::run(&dir, &key, node, verify, json),
        Cmd::Down { dir, json } => down(&dir).map(|summary| report(json, &summary)),
        Cmd::Load {
            dir,
            rate,
            duration,
            out,
            json,
        } => load(&dir, rate, duration, &out).map(|summary| report(json, &summary)),
        Cmd::Demo {
            json,
            scenario,
            hosts,
            shape,
        } => demo(json, scenario, hosts, shape),
        Cmd::Partition { dir, groups, json } => {
            procs::partition(&dir, Some(&groups)).map(|summary| report(json, &summary))
        }
        Cmd::Heal { dir, json } => procs::partition(&dir, None).map(|s| report(json, &s)),
        Cmd::Shape {
            dir,
            node,
            shape,
            json,
        } => procs::reshape(&dir, node, shape).map(|summary| report(json, &summary)),
        Cmd::ServeLinks { dir } => wire::serve(&dir),
        Cmd::Chaos {
            upgrades,
            seed,
            json,
        } => chaos::chaos(upgrades, seed, json),
        Cmd::StopNode { dir, node, json } => {
            stop_node(&dir, node).map(|summary| report(json, &summary))
        }
        Cmd::StartNode {
            dir,
            node,
            clock_offset,
            json,
        } => start_node(&dir, node, clock_offset.as_deref()).map(|s| report(json, &s)),
        Cmd::ServePackages { dir, listen } => serve_packages(&dir, &listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testnet: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command's outcome: its JSON object with `--json`, else its `"summary"` line.
fn report(json: bool, summary: &Value) {
    if json {
        let mut v = summary.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("summary");
        }
        println!("{v}");
    } else if let Some(line) = summary["summary"].as_str() {
        println!("{line}");
    }
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

/// The directory holding this build's binaries.
fn bin_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating testnet: {e}"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "testnet has no directory".into())
}

fn bin(name: &str) -> Result<PathBuf, String> {
    let p = bin_dir()?.join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: build the workspace's binaries (cargo build --workspace)",
            p.display()
        ))
    }
}

fn serve_packages(dir: &Path, listen: &str) -> Result<(), String> {
    let root = dir.join("packages");
    runtime()?.block_on(async move {
        let app = axum::Router::new().route(
            "/packages/{name}",
            axum::routing::get(
                move |axum::extract::Path(name): axum::extract::Path<String>| {
                    let root = root.clone();
                    async move {
                        // Plain file names only: nothing outside DIR/packages is served.
                        if name.contains('/') || name.starts_with('.') {
                            return Err(axum::http::StatusCode::NOT_FOUND);
                        }
                        tokio::fs::read(root.join(name))
                            .await
                            .map_err(|_| axum::http::StatusCode::NOT_FOUND)
                    }
                },
            ),
        );
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("listening on {listen}: {e}"))?;
        axum::serve(l, app).await.map_err(|e| e.to_string())
    })
}

/// The replicas to write to and read back from: the subnet's nodes; with spare
/// machines (membership can move), every machine whose replica answers now, since
/// added nodes run the subnet and removed ones no longer hold it.
fn replica_urls(l: &Layout) -> Vec<String> {
    let urls = |ns: &mut dyn Iterator<Item = &NodeLayout>| -> Vec<String> {
        ns.map(|n| format!("http://{}", n.http_address)).collect()
    };
    if l.spares.is_empty() {
        return urls(&mut l.nodes.iter());
    }
    let all = urls(&mut l.machines().map(|(_, n)| n));
    let Ok(rt) = runtime() else {
        return all;
    };
    rt.block_on(async {
        let Ok(client) = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
        else {
            return all.clone();
        };
        let answers =
            futures_util::future::join_all(all.iter().map(|u| procs::replica_status(&client, u)))
                .await;
        all.iter()
            .zip(answers)
            .filter(|(_, a)| a.is_some())
            .map(|(u, _)| u.clone())
            .collect()
    })
}

fn load(dir: &Path, rate: u64, duration: u64, out: &Path) -> Result<Value, String> {
    let l = layout(dir)?;
    let urls = replica_urls(&l);
    let network = story::network_id(dir)?;
    let run = registry::server::now_ns() / 1_000_000;
    let (sent, writes) = runtime()?.block_on(async {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(duration);
        // Ctrl-C (or SIGTERM) ends the sending early; the confirmation still runs.
        let flag = stop.clone();
        tokio::spawn(async move {
            registry::shutdown::requested().await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let confirmer = tokio::spawn(story::confirm(urls.clone(), rx));
        let sent = story::send(urls.clone(), network, rate, run, stop, Some(deadline), tx).await;
        (sent, confirmer.await.unwrap_or_default())
    });
    story::write_lines(out, &writes)?;
    Ok(json!({
        "summary": format!(
            "{} writes acknowledged ({} accepted of {} sent)",
            writes.len(),
            sent.accepted,
            sent.sent
        ),
        "writes_acknowledged": writes.len(),
        "writes_accepted": sent.accepted,
        "writes_sent": sent.sent,
        "out": out.display().to_string(),
    }))
}

fn verify(dir: &Path, writes: &Path, as_json: bool) -> Result<(), String> {
    let l = layout(dir)?;
    let urls = replica_urls(&l);
    let ws = story::read_lines(writes)?;
    let key = query::subnet_key(dir)?;
    let v = runtime()?.block_on(story::verify(&urls, &ws, &key));
    let report = json!({
        "writes": ws.len(),
        "nodes": urls.len(),
        "lost": v.lost,
        "unverified": v.unverified,
        "unmigrated": v.unmigrated,
        "state_schemas": v.schemas,
    });
    if as_json {
        println!("{report}");
    } else {
        println!(
            "{} writes on {} nodes: {} missing, {} without a valid witness or certificate, {} without their checksum; state schemas {:?}",
            ws.len(),
            urls.len(),
            v.lost.len(),
            v.unverified.len(),
            v.unmigrated.len(),
            v.schemas
        );
    }
    if !v.lost.is_empty() || !v.unmigrated.is_empty() || !v.unverified.is_empty() {
        let mut bad = v.lost.clone();
        bad.extend(
            v.unverified
                .iter()
                .map(|u| format!("{u} (does not verify)")),
        );
        bad.extend(v.unmigrated.iter().map(|u| format!("{u} (no checksum)")));
        bad.truncate(5);
        return Err(format!(
            "writes not found as acknowledged: {}",
            bad.join(", ")
        ));
    }
    Ok(())
}

/// `nns args` as the neuron whose key is in `key`: through the NNS subnet's nodes in
/// turn (the next one when one cannot take it now: exit 3), or the registry server
/// without an NNS subnet.
fn nns(l: &Layout, key: &Path, args: &[&str]) -> Result<String, String> {
    let targets = match &l.nns_key {
        Some(k) if !l.nns.is_empty() => l
            .nns_urls()
            .into_iter()
            .map(|u| (u, Some(k.clone())))
            .collect(),
        _ => vec![(l.registry_url(), None)],
    };
    let mut last = String::new();
    for (url, nns_key) in targets {
        let mut cmd = Command::new(bin("nns")?);
        cmd.args(["--registry", &url]);
        if let Some(k) = &nns_key {
            cmd.args(["--nns-key", k]);
        }
        let out = cmd
            .arg("--neuron-key")
            .arg(key)
            .args(args)
            .output()
            .map_err(|e| format!("nns: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        last = format!(
            "nns {args:?} through {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if out.status.code() != Some(i32::from(registry::exit::EXIT_UNREACHABLE)) {
            break;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (unique names and groups, valid defaults) run on
    /// every subcommand, not only on the ones a test happens to call.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
