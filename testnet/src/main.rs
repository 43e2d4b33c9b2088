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

mod query;
mod story;

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
/// How long `down` lets a process exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(name = "testnet", about = "A local multi-node testnet on loopback.")]
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
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        #[arg(long, default_value_t = 20)]
        dkg_interval: u64,
        #[arg(long, default_value_t = 3)]
        neurons: usize,
        /// Registry on P, packages on P+1, node i on P+10+4i (consensus, HTTP, orchestrator).
        /// 0: a range where nothing listens now.
        #[arg(long, default_value_t = 31000)]
        base_port: u16,
    },
    /// Start the registry, the package server and the orchestrators in the background.
    Up {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Every node's state.
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
    },
    /// The whole story in a temporary directory: prep, up, load, package the next
    /// release, elect and deploy it with nns, watch the upgrade, check every write, down.
    Demo {
        #[arg(long)]
        json: bool,
    },
    /// Stop node I's orchestrator and replica, keeping its directory.
    StopNode {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node: usize,
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
    },
    /// Stop everything `up` started.
    Down {
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

/// `DIR/testnet.json`: what `prep` decided, for the other commands.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Layout {
    registry_port: u16,
    package_port: u16,
    nodes: Vec<NodeLayout>,
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
            nodes,
            dkg_interval,
            neurons,
            base_port,
        } => match base_port {
            0 => free_base(nodes).and_then(|base| prep(&dir, nodes, dkg_interval, neurons, base)),
            base => prep(&dir, nodes, dkg_interval, neurons, base),
        },
        Cmd::Up { dir } => up(&dir),
        Cmd::Status { dir, json } => status(&dir, json),
        Cmd::Package {
            version,
            out,
            next_release,
            json,
        } => package(&version, &out, next_release, json).map(|_| ()),
        Cmd::Verify { dir, writes, json } => verify(&dir, &writes, json),
        Cmd::Query {
            dir,
            key,
            node,
            verify,
            json,
        } => query::run(&dir, &key, node, verify, json),
        Cmd::Down { dir } => down(&dir),
        Cmd::Load {
            dir,
            rate,
            duration,
            out,
        } => load(&dir, rate, duration, &out),
        Cmd::Demo { json } => demo(json),
        Cmd::StopNode { dir, node } => stop_node(&dir, node),
        Cmd::StartNode {
            dir,
            node,
            clock_offset,
        } => start_node(&dir, node, clock_offset.as_deref()),
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

fn package(version: &str, out: &Path, next: bool, as_json: bool) -> Result<String, String> {
    let v = ReplicaVersion::new(version).map_err(|e| format!("--version: {e}"))?;
    let replica = bin(if next { "replica-next" } else { "replica" })?;
    let orchestrator = bin("orchestrator")?;
    let files = [
        ("bin/replica", replica.as_path()),
        ("bin/orchestrator", orchestrator.as_path()),
    ];
    let sha = release::build_package(out, &v, "testnet", &files).map_err(|e| e.to_string())?;
    if as_json {
        println!(
            "{}",
            json!({"version": version, "sha256": sha, "path": out.display().to_string()})
        );
    } else {
        println!("{sha}");
    }
    Ok(sha)
}

fn prep(dir: &Path, nodes: usize, dkg: u64, neurons: usize, base: u16) -> Result<(), String> {
    if dir.join("testnet.json").exists() {
        return Err(format!("{} already holds a testnet", dir.display()));
    }
    if !(1..=40).contains(&nodes) {
        return Err("--nodes must be between 1 and 40".into());
    }
    if u32::from(base) + 10 + 4 * nodes as u32 > 65535 {
        return Err("--base-port leaves no room for every node's ports".into());
    }
    let packages = dir.join("packages");
    std::fs::create_dir_all(&packages).map_err(io(&packages))?;
    let first = packages.join(format!("{FIRST_VERSION}.tar.zst"));
    let sha = package(FIRST_VERSION, &first, false, false)?;
    let package_port = base + 1;
    let params = NetworkParams {
        nodes,
        neurons,
        dkg_interval_length: dkg,
        unit_delay_ms: 200,
        initial_notary_delay_ms: 100,
        base_port: base,
        replica_version: ReplicaVersion::new(FIRST_VERSION).map_err(|e| e.to_string())?,
        package_sha256: sha.clone(),
        package_urls: vec![format!(
            "http://127.0.0.1:{package_port}/packages/{FIRST_VERSION}.tar.zst"
        )],
        genesis_time_ns: registry::server::now_ns(),
    };
    let mut net = generate_network(&params, &mut rand_chacha::ChaCha20Rng::from_os_rng())
        .map_err(|e| e.to_string())?;
    let mut layout = Layout {
        registry_port: base,
        package_port,
        nodes: Vec::new(),
    };
    for (i, n) in net.nodes.iter_mut().enumerate() {
        let p = base as usize + 10 + 4 * i;
        n.record.consensus_address = format!("127.0.0.1:{p}");
        n.record.http_address = format!("127.0.0.1:{}", p + 1);
        n.record.cup_address = format!("127.0.0.1:{}", p + 2);
        net.genesis.nodes[i] = n.record.clone();
        layout.nodes.push(NodeLayout {
            node_id: n.record.node_id.to_string(),
            dir: dir.join("nodes").join(format!("node-{i}")),
            consensus_address: n.record.consensus_address.clone(),
            http_address: n.record.http_address.clone(),
            orchestrator_address: n.record.cup_address.clone(),
        });
    }
    net.write(dir)?;
    let registry_dir = dir.join("registry");
    let out = Command::new(bin("registry")?)
        .args(["init", "--dir"])
        .arg(&registry_dir)
        .arg("--genesis")
        .arg(dir.join("genesis.json"))
        .output()
        .map_err(|e| format!("registry init: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "registry init: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let root_key = std::fs::read_to_string(registry_dir.join("registry_public_key.hex"))
        .map_err(io(&registry_dir))?;
    let verified = release::VerifiedPackage::verify(&first, &sha).map_err(|e| e.to_string())?;
    let v1 = ReplicaVersion::new(FIRST_VERSION).map_err(|e| e.to_string())?;
    for n in &layout.nodes {
        let toml = format!(
            "registry_urls = [\"http://127.0.0.1:{}\"]\nregistry_root_key = \"{}\"\nlisten = \"{}\"\npoll_interval_ms = 300\n",
            layout.registry_port,
            root_key.trim(),
            n.orchestrator_address
        );
        std::fs::write(n.dir.join("node.toml"), toml).map_err(io(&n.dir))?;
        let images = n.dir.join("images");
        release::unpack(&verified, &v1, &images).map_err(|e| e.to_string())?;
        release::switch_current(&images, verified.sha256()).map_err(|e| e.to_string())?;
    }
    let text = serde_json::to_string_pretty(&layout).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("testnet.json"), text + "\n").map_err(io(dir))?;
    println!(
        "prepared {} nodes in {}; start them with: testnet up --dir {}",
        layout.nodes.len(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

fn layout(dir: &Path) -> Result<Layout, String> {
    let path = dir.join("testnet.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (run testnet prep first)", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The pid recorded for `name`, if that process still runs.
fn running(dir: &Path, name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// The process exists and is not a zombie (a killed process whose parent has gone, say
/// `testnet up`, may stay a zombie where nothing reaps orphans).
fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| st.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

/// Starts `cmd` in its own process group, logging to `DIR/logs/<name>.log`.
fn spawn(dir: &Path, name: &str, cmd: &mut Command) -> Result<(), String> {
    if let Some(pid) = running(dir, name) {
        println!("{name} already runs (pid {pid})");
        return Ok(());
    }
    let logs = dir.join("logs");
    let pids = dir.join("pids");
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    std::fs::create_dir_all(&pids).map_err(io(&pids))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))
        .map_err(io(&logs))?;
    let err = log.try_clone().map_err(io(&logs))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    std::fs::write(pids.join(format!("{name}.pid")), child.id().to_string()).map_err(io(&pids))?;
    Ok(())
}

fn up(dir: &Path) -> Result<(), String> {
    let l = layout(dir)?;
    spawn(
        dir,
        "registry",
        Command::new(bin("registry")?)
            .args(["serve", "--dir"])
            .arg(dir.join("registry"))
            .args(["--listen", &format!("127.0.0.1:{}", l.registry_port)]),
    )?;
    spawn(
        dir,
        "packages",
        Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .args(["serve-packages", "--dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{}", l.package_port)]),
    )?;
    for (i, n) in l.nodes.iter().enumerate() {
        start_orchestrator(dir, i, n)?;
    }
    let rt = runtime()?;
    let start = Instant::now();
    rt.block_on(async {
        let client = client()?;
        loop {
            let mut all = true;
            for n in &l.nodes {
                let h = get(&client, &format!("http://{}/api/v1/status", n.http_address))
                    .await
                    .and_then(|s| s["finalized_height"].as_u64())
                    .unwrap_or(0);
                all &= h >= 1;
            }
            if all {
                return Ok(());
            }
            if start.elapsed() > UP_PATIENCE {
                return Err(format!(
                    "the subnet did not finalize a block within {} s; see {}",
                    UP_PATIENCE.as_secs(),
                    dir.join("logs").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })?;
    println!(
        "testnet up: {} nodes finalizing; registry http://127.0.0.1:{}",
        l.nodes.len(),
        l.registry_port
    );
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())
}

async fn get(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

fn status(dir: &Path, as_json: bool) -> Result<(), String> {
    let l = layout(dir)?;
    let registry_url = format!("http://127.0.0.1:{}", l.registry_port);
    let report = runtime()?.block_on(async {
        let client = client()?;
        let reg = get(&client, &format!("{registry_url}/api/v1/status")).await;
        let subnets = get(&client, &format!("{registry_url}/api/v1/subnets")).await;
        let mut nodes = Vec::new();
        for n in &l.nodes {
            let o = get(&client, &format!("http://{}/status", n.orchestrator_address)).await;
            let r = get(&client, &format!("http://{}/api/v1/status", n.http_address)).await;
            let field = |v: &Option<Value>, k: &str| v.as_ref().map(|v| v[k].clone()).unwrap_or(Value::Null);
            nodes.push(json!({
                "node_id": n.node_id,
                "alive": o.is_some(),
                "orchestrator_url": format!("http://{}", n.orchestrator_address),
                "replica_url": format!("http://{}", n.http_address),
                "running_version": field(&o, "running_version"),
                "upgrade_state": o.as_ref().map(|o| o["upgrade"]["state"].clone()).unwrap_or(Value::Null),
                "upgrade_error": o.as_ref().map(|o| o["upgrade"]["last_error"].clone()).unwrap_or(Value::Null),
                "state_schema": field(&r, "state_schema"),
                "finalized_height": field(&r, "finalized_height"),
                "certified_height": field(&r, "certified_height"),
                "cup_height": field(&r, "cup_height"),
                "state_hash": field(&r, "state_hash"),
            }));
        }
        Ok::<_, String>(json!({
            "registry_url": registry_url,
            "package_url_base": format!("http://127.0.0.1:{}/packages", l.package_port),
            "registry_version": reg.as_ref().map(|r| r["registry_version"].clone()).unwrap_or(Value::Null),
            "subnets": subnets.unwrap_or(Value::Null),
            "nodes": nodes,
        }))
    })?;
    if as_json {
        println!("{report}");
    } else {
        println!(
            "registry {} at version {}",
            report["registry_url"], report["registry_version"]
        );
        for (i, n) in report["nodes"].as_array().into_iter().flatten().enumerate() {
            println!(
                "node {i}: alive {} version {} upgrade {} finalized {} certified {} cup {} schema {}",
                n["alive"],
                n["running_version"],
                n["upgrade_state"],
                n["finalized_height"],
                n["certified_height"],
                n["cup_height"],
                n["state_schema"]
            );
            if let Some(e) = n["upgrade_error"].as_str() {
                println!("        last upgrade error: {e}");
            }
        }
    }
    Ok(())
}

fn down(dir: &Path) -> Result<(), String> {
    let l = layout(dir)?;
    let mut names: Vec<String> = (0..l.nodes.len()).map(|i| format!("node-{i}")).collect();
    names.push("packages".into());
    names.push("registry".into());
    for name in names {
        stop(dir, &name);
    }
    // Replicas run in their own process groups (the orchestrator's supervisor): stop
    // any the orchestrators left behind, by the pid in their status files.
    for n in &l.nodes {
        stop_leftover_replica(&n.dir);
    }
    println!("testnet down");
    Ok(())
}

/// Stops the process group recorded for `name`: SIGTERM, SIGKILL after the grace period.
fn stop(dir: &Path, name: &str) {
    let Some(pid) = running(dir, name) else {
        return;
    };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    let start = Instant::now();
    while alive(pid) && start.elapsed() < STOP_GRACE {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = std::fs::remove_file(dir.join("pids").join(format!("{name}.pid")));
}

fn node_of(l: &Layout, node: usize) -> Result<&NodeLayout, String> {
    l.nodes.get(node).ok_or_else(|| {
        format!(
            "--node {node}: the testnet has nodes 0 to {}",
            l.nodes.len() - 1
        )
    })
}

fn stop_node(dir: &Path, node: usize) -> Result<(), String> {
    let l = layout(dir)?;
    let n = node_of(&l, node)?;
    stop(dir, &format!("node-{node}"));
    stop_leftover_replica(&n.dir);
    println!("node {node} stopped");
    Ok(())
}

/// The operator's one step on a node: start the installed release's orchestrator; it
/// takes it from there.
fn start_orchestrator(dir: &Path, i: usize, n: &NodeLayout) -> Result<(), String> {
    let orchestrator = n.dir.join("images/current/bin/orchestrator");
    spawn(
        dir,
        &format!("node-{i}"),
        Command::new(orchestrator).arg("--node-dir").arg(&n.dir),
    )
}

fn start_node(dir: &Path, node: usize, clock_offset: Option<&str>) -> Result<(), String> {
    let l = layout(dir)?;
    let n = node_of(&l, node)?;
    match clock_offset {
        None => start_orchestrator(dir, node, n)?,
        Some(offset) => {
            let valid = offset.len() >= 3
                && offset.starts_with(['+', '-'])
                && offset[1..offset.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                && offset.ends_with(['s', 'm', 'h', 'd']);
            if !valid {
                return Err(format!(
                    "--clock-offset {offset:?}: expected a sign, a number and a unit (s, m, h, d), e.g. +1d"
                ));
            }
            let lib = faketime_library().ok_or(
                "--clock-offset needs libfaketime (the faketime package; scripts/install-deps.sh installs it)",
            )?;
            spawn(
                dir,
                &format!("node-{node}"),
                Command::new(n.dir.join("images/current/bin/orchestrator"))
                    .arg("--node-dir")
                    .arg(&n.dir)
                    .env("LD_PRELOAD", lib)
                    .env("FAKETIME", offset)
                    // Only the wall clock: the monotonic one keeps running as it does.
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            )?;
        }
    }
    println!("node {node} started");
    Ok(())
}

/// Where Debian's faketime package puts its library.
fn faketime_library() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
}

/// A replica whose orchestrator died without stopping it: find it by its node directory.
fn stop_leftover_replica(node_dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let needle = node_dir.display().to_string();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmdline);
        if cmd.contains("bin/replica") && cmd.contains(&needle) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
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

fn replica_urls(l: &Layout) -> Vec<String> {
    l.nodes
        .iter()
        .map(|n| format!("http://{}", n.http_address))
        .collect()
}

fn load(dir: &Path, rate: u64, duration: u64, out: &Path) -> Result<(), String> {
    let l = layout(dir)?;
    let urls = replica_urls(&l);
    let network = story::network_id(dir)?;
    let run = registry::server::now_ns() / 1_000_000;
    let writes = runtime()?.block_on(async {
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
        story::send(urls.clone(), network, rate, run, stop, Some(deadline), tx).await;
        confirmer.await.unwrap_or_default()
    });
    story::write_lines(out, &writes)?;
    println!("{} writes acknowledged", writes.len());
    Ok(())
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

/// A base port with room for `nodes` above it, where nothing listens now.
fn free_base(nodes: usize) -> Result<u16, String> {
    let span = 10 + 4 * nodes as u16;
    for _ in 0..100 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        if base < 65535 - span
            && (base..base + span).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return Ok(base);
        }
    }
    Err("no free range of loopback ports".into())
}

fn nns(registry: &str, key: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin("nns")?)
        .args(["--registry", registry, "--neuron-key"])
        .arg(key)
        .args(args)
        .output()
        .map_err(|e| format!("nns: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nns {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn demo(as_json: bool) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("testnet-demo-{}", std::process::id()));
    let nodes = 4;
    prep(&dir, nodes, 9, 3, free_base(nodes)?)?;
    let result = demo_in(&dir);
    let _ = down(&dir);
    match result {
        Ok(summary) => {
            let _ = std::fs::remove_dir_all(&dir);
            // The final line, for scripts.
            if as_json {
                println!("{summary}");
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("testnet demo: kept {} for inspection", dir.display());
            Err(e)
        }
    }
}

fn demo_in(dir: &Path) -> Result<Value, String> {
    let t0 = Instant::now();
    let mut timeline: Vec<(u128, String)> = Vec::new();
    let mut event = |what: String| {
        let ms = t0.elapsed().as_millis();
        println!("[{:>7} ms] {what}", ms);
        timeline.push((ms, what));
    };
    up(dir)?;
    event("testnet up: 4 nodes finalizing on 1.0.0".into());
    let l = layout(dir)?;
    let urls = replica_urls(&l);
    let network = story::network_id(dir)?;
    let registry = format!("http://127.0.0.1:{}", l.registry_port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = registry::server::now_ns() / 1_000_000;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = rt.spawn(story::send(
        urls.clone(),
        network,
        20,
        run,
        stop.clone(),
        None,
        tx,
    ));
    let confirmer = rt.spawn(story::confirm(urls.clone(), rx));
    event("load: 20 signed writes per second".into());

    // The new method, before: the first release refuses it; a put it accepts.
    let client = client()?;
    let user = crypto::ed25519::Ed25519KeyPair::from_seed(&[200; 32]);
    let append = |nonce| {
        story::sign(
            &user,
            network,
            nonce,
            Operation::Append {
                key: "demo".into(),
                value: b", appended by 2.0.0".to_vec(),
            },
        )
    };
    match rt.block_on(story::submit(&client, &urls[0], &append(1))) {
        Err(e) => event(format!("1.0.0 refuses the append method ({e})")),
        Ok(()) => return Err("1.0.0 accepted an append".into()),
    }
    let put = story::sign(
        &user,
        network,
        2,
        Operation::Put {
            key: "demo".into(),
            value: b"written by 1.0.0".to_vec(),
        },
    );
    rt.block_on(story::submit(&client, &urls[0], &put))?;

    let pkg = dir.join("packages").join("2.0.0.tar.zst");
    let sha = package("2.0.0", &pkg, true, false)?;
    event(format!(
        "packaged 2.0.0, the next release: state schema 2 (values get checksums), the append method, artifacts on icup-consensus/2 (sha256 {})",
        &sha[..16]
    ));
    let key = |i: usize| dir.join("neurons").join(format!("neuron-{i}.key"));
    let url = format!("http://127.0.0.1:{}/packages/2.0.0.tar.zst", l.package_port);
    let id = |out: String| out.trim_start_matches("proposal ").to_string();
    let p = id(nns(
        &registry,
        &key(0),
        &[
            "propose",
            "elect-version",
            "--version",
            "2.0.0",
            "--sha256",
            &sha,
            "--url",
            &url,
        ],
    )?);
    nns(&registry, &key(1), &["vote", "--proposal", &p, "--yes"])?;
    event(format!("proposal {p} (elect 2.0.0) adopted"));
    let subnets: Value = rt.block_on(async {
        get(&client, &format!("{registry}/api/v1/subnets"))
            .await
            .ok_or_else(|| "reading subnets".to_string())
    })?;
    let subnet = subnets[0]["subnet_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let p = id(nns(
        &registry,
        &key(0),
        &[
            "propose",
            "deploy-version",
            "--subnet",
            &subnet,
            "--version",
            "2.0.0",
        ],
    )?);
    nns(&registry, &key(1), &["vote", "--proposal", &p, "--yes"])?;
    event(format!("proposal {p} (deploy 2.0.0 to the subnet) adopted"));
    let deployed_at = Instant::now();

    // Watch: halting, the CUP, each node's switch and migration, the first block on 2.0.0.
    let mut halting_at: Option<Instant> = None;
    let mut switched = vec![false; l.nodes.len()];
    let mut migrated = vec![false; l.nodes.len()];
    let mut all_running_at: Option<Instant> = None;
    let start = Instant::now();
    let resumed_at = loop {
        let mut all_resumed = true;
        for (i, n) in l.nodes.iter().enumerate() {
            let r = rt.block_on(get(
                &client,
                &format!("http://{}/api/v1/status", n.http_address),
            ));
            let o = rt.block_on(get(
                &client,
                &format!("http://{}/status", n.orchestrator_address),
            ));
            let on_b = r.as_ref().is_some_and(|r| r["replica_version"] == "2.0.0");
            if halting_at.is_none()
                && r.as_ref()
                    .is_some_and(|r| r["halting"] == true || r["halted"] == true)
            {
                halting_at = Some(Instant::now());
                event(format!(
                    "node {i}: halting (updates now get \"subnet is upgrading\")"
                ));
            }
            if !switched[i] && o.as_ref().is_some_and(|o| o["running_version"] == "2.0.0") {
                switched[i] = true;
                // The orchestrator's own CUP; right after a re-exec it may not be read yet.
                let cup = o
                    .as_ref()
                    .and_then(|o| o["cup"]["height"].as_u64())
                    .map(|h| format!(" from the CUP at height {h}"))
                    .unwrap_or_default();
                event(format!("node {i}: orchestrator re-executed as 2.0.0{cup}"));
                if all_running_at.is_none() && switched.iter().all(|s| *s) {
                    all_running_at = Some(Instant::now());
                }
            }
            if on_b && !migrated[i] && r.as_ref().is_some_and(|r| r["state_schema"] == 2) {
                migrated[i] = true;
                event(format!(
                    "node {i}: replica 2.0.0 up, state migrated to schema 2"
                ));
            }
            let resumed = on_b
                && r.as_ref().is_some_and(|r| {
                    r["finalized_height"].as_u64() > r["cup_height"].as_u64().map(|c| c + 1)
                });
            all_resumed &= resumed;
        }
        if all_resumed {
            let now = Instant::now();
            event("every node finalizes on 2.0.0".into());
            break now;
        }
        if start.elapsed() > story::UPGRADE_PATIENCE {
            return Err(format!(
                "the upgrade did not complete within {} s",
                story::UPGRADE_PATIENCE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let downtime_ms = halting_at
        .map(|h| resumed_at.duration_since(h).as_millis())
        .unwrap_or(0);
    // The new method, after: 2.0.0 appends to the value 1.0.0 wrote.
    rt.block_on(story::submit(&client, &urls[1], &append(3)))?;
    let want = "written by 1.0.0, appended by 2.0.0";
    let start = Instant::now();
    loop {
        let answers: Vec<Option<Value>> = urls
            .iter()
            .map(|u| rt.block_on(story::query(&client, u, "demo")))
            .collect();
        if answers
            .iter()
            .all(|a| a.as_ref().is_some_and(|a| a["value"] == want))
        {
            event(format!(
                "2.0.0 executes the append method: \"{want}\" on every node"
            ));
            break;
        }
        if start.elapsed() > story::CONFIRM_PATIENCE {
            return Err(format!(
                "the append did not show up on every node: {answers:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let accepted = rt.block_on(sender).map_err(|e| e.to_string())?;
    let acknowledged = rt.block_on(confirmer).map_err(|e| e.to_string())?;
    let checked = rt.block_on(story::verify(
        &urls,
        &acknowledged,
        &query::subnet_key(dir)?,
    ));
    let lost = checked.lost;
    event(format!(
        "{} writes accepted, {} acknowledged, {} lost, {} without their checksum (checked on every node; state schemas {:?})",
        accepted,
        acknowledged.len(),
        lost.len(),
        checked.unmigrated.len(),
        checked.schemas
    ));
    println!(
        "downtime: {downtime_ms} ms (from the first halting node to every node finalizing on 2.0.0)"
    );
    let summary = json!({
        "downtime_ms": downtime_ms,
        // From the deploy proposal's adoption to every node running the new release.
        "deploy_to_all_running_ms": all_running_at
            .map(|t| t.duration_since(deployed_at).as_millis()),
        "writes_acknowledged": acknowledged.len(),
        "writes_lost": lost.len(),
        "writes_unmigrated": checked.unmigrated.len(),
        "writes_unverified": checked.unverified.len(),
        "state_schemas": checked.schemas,
        "from_version": "1.0.0",
        "to_version": "2.0.0",
        "timeline": timeline.iter().map(|(ms, w)| json!({"ms": ms, "event": w})).collect::<Vec<_>>(),
    });
    if !lost.is_empty() {
        return Err(format!("acknowledged writes lost: {}", lost.join(", ")));
    }
    if !checked.unverified.is_empty() {
        return Err(format!(
            "acknowledged writes whose witness or certificate does not verify: {}",
            checked.unverified.join(", ")
        ));
    }
    if !checked.unmigrated.is_empty() {
        return Err(format!(
            "acknowledged writes not in schema 2's form: {}",
            checked.unmigrated.join(", ")
        ));
    }
    Ok(summary)
}
