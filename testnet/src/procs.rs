//! The testnet's processes: its layout on disk, starting, watching and stopping the
//! registry, the package server and each node's orchestrator (and its replica).

use super::*;

pub(crate) fn layout(dir: &Path) -> Result<Layout, String> {
    let path = dir.join("testnet.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (run testnet prep first)", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The pid recorded for `name`, if that process still runs.
pub(crate) fn running(dir: &Path, name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// The process exists and is not a zombie (a killed process whose parent has gone, say
/// `testnet up`, may stay a zombie where nothing reaps orphans).
pub(crate) fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| st.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

/// Starts `cmd` in its own process group, logging to `DIR/logs/<name>.log`.
pub(crate) fn spawn(dir: &Path, name: &str, cmd: &mut Command) -> Result<(), String> {
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

pub(crate) fn up(dir: &Path) -> Result<Value, String> {
    let l = layout(dir)?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    if let Some(net) = &l.netns {
        // The hosts and their wire first (what a crashed run left is made again).
        if running(dir, "links").is_none() {
            net.reclaim(dir)?;
            net.create()?;
        }
        spawn(
            dir,
            "links",
            Command::new(&me).args(["serve-links", "--dir"]).arg(dir),
        )?;
    }
    // With an NNS subnet, the registry server is a read-only copy of what it certifies,
    // for the tools (status, the dashboard): no node depends on it.
    let mut registry = l.command(hosts::Host::Infra, &bin("registry")?);
    registry
        .args(["serve", "--dir"])
        .arg(dir.join("registry"))
        .args(["--listen", &format!("{}:{}", l.infra_host, l.registry_port)]);
    if let Some(key) = &l.nns_key {
        for url in l.nns_urls() {
            registry.args(["--follow-nns", &url]);
        }
        registry.args(["--nns-key", key]);
    }
    spawn(dir, "registry", &mut registry)?;
    spawn(
        dir,
        "packages",
        l.command(hosts::Host::Infra, &me)
            .args(["serve-packages", "--dir"])
            .arg(dir)
            .args(["--listen", &format!("{}:{}", l.infra_host, l.package_port)]),
    )?;
    // The dashboard reads the network from outside, as anyone could, checking the
    // registry's answers against its key.
    let key_file = dir.join("registry").join("registry_public_key.hex");
    let key = std::fs::read_to_string(&key_file).map_err(io(&key_file))?;
    spawn(
        dir,
        "dashboard",
        Command::new(bin("dashboard")?)
            .args(["--registry", &l.registry_url()])
            .args(["--listen", l.dashboard_url().trim_start_matches("http://")])
            .args(["--registry-key", key.trim()]),
    )?;
    for (i, n) in l.machines() {
        start_orchestrator(dir, i, n)?;
    }
    let rt = runtime()?;
    let start = Instant::now();
    rt.block_on(async {
        let client = client()?;
        loop {
            let mut all = true;
            for n in l.nodes.iter().chain(&l.nns) {
                let h = replica_status(&client, &format!("http://{}", n.http_address))
                    .await
                    .map_or(0, |s| s.finalized_height);
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
    Ok(json!({
        "summary": format!(
            "testnet up: {} nodes finalizing{}; registry {}; dashboard {}",
            l.nodes.len(),
            match l.spares.len() {
                0 => String::new(),
                k => format!(", {k} spare node{} waiting for an assignment", if k == 1 { "" } else { "s" }),
            },
            l.registry_url(),
            l.dashboard_url()
        ),
        "nodes": l.nodes.len(),
        "spares": l.spares.len(),
        "nns_nodes": l.nns.len(),
        "registry_url": l.registry_url(),
        "dashboard_url": l.dashboard_url(),
    }))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

pub(crate) fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())
}

/// How long one call to a replica's API may take: a query answer carries up to 64 KiB.
pub(crate) const REPLICA_DEADLINE: Duration = Duration::from_secs(10);

/// The typed client of the replica at `url` (`http://ADDR`).
pub(crate) fn replica(client: &reqwest::Client, url: &str) -> replica::client::ReplicaClient {
    replica::client::ReplicaClient::new(client.clone(), url, REPLICA_DEADLINE)
}

/// A replica's status (`url`: `http://ADDR`); `None` when it does not answer as a
/// replica would.
pub(crate) async fn replica_status(
    client: &reqwest::Client,
    url: &str,
) -> Option<replica::driver::StatusView> {
    replica(client, url).status().await.ok()
}

/// The id of the registry's first subnet (the testnet's only one).
/// The application subnet: the one node 0 is a member of (the NNS subnet is another).
pub(crate) async fn first_subnet(l: &Layout) -> Result<String, String> {
    let registry = l.registry_url();
    let subnets = registry_client(&registry)?
        .subnets()
        .await
        .map_err(|e| format!("reading subnets: {e}"))?;
    let first = l
        .nodes
        .first()
        .map(|n| n.node_id.as_str())
        .unwrap_or_default();
    subnets
        .iter()
        .find(|s| s.members.iter().any(|m| m.to_string() == first))
        .or(subnets.first())
        .map(|s| s.subnet_id.to_string())
        .ok_or_else(|| format!("{registry} lists no subnet"))
}

/// The typed client of the testnet's registry. It reads without checking the
/// registry's signatures: the operator runs both ends.
pub(crate) fn registry_client(registry: &str) -> Result<registry::client::RegistryClient, String> {
    registry::client::RegistryClient::new(registry, None).map_err(|e| e.to_string())
}

pub(crate) async fn get(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// Prints every node's state; returns the nodes that are down (an orchestrator or a
/// replica that does not answer), for the exit code.
pub(crate) fn status(dir: &Path, as_json: bool) -> Result<Vec<usize>, String> {
    let l = layout(dir)?;
    let registry_url = l.registry_url();
    let report = runtime()?.block_on(async {
        let client = client()?;
        let registry = registry_client(&registry_url)?;
        let reg = registry.status().await.ok();
        let subnets = registry.subnets().await.ok();
        let mut nodes = Vec::new();
        for (i, n) in l.machines() {
            let o = get(&client, &format!("http://{}/status", n.orchestrator_address)).await;
            let r = replica_status(&client, &format!("http://{}", n.http_address)).await;
            let field = |v: &Option<Value>, k: &str| v.as_ref().map(|v| v[k].clone()).unwrap_or(Value::Null);
            let of = |f: &dyn Fn(&replica::driver::StatusView) -> Value| r.as_ref().map_or(Value::Null, f);
            nodes.push(json!({
                "node_id": n.node_id,
                "spare": (l.nodes.len()..l.nodes.len() + l.spares.len()).contains(&i),
                "nns": i >= l.nodes.len() + l.spares.len(),
                "subnet_id": field(&o, "subnet_id"),
                "decision": field(&o, "decision"),
                "alive": o.is_some(),
                "orchestrator_url": format!("http://{}", n.orchestrator_address),
                "replica_url": format!("http://{}", n.http_address),
                "running_version": field(&o, "running_version"),
                "registry_version": field(&o, "registry_version"),
                "upgrade_state": o.as_ref().map(|o| o["upgrade"]["state"].clone()).unwrap_or(Value::Null),
                "upgrade_error": o.as_ref().map(|o| o["upgrade"]["last_error"].clone()).unwrap_or(Value::Null),
                "upgrade_preflight": o.as_ref().map(|o| o["upgrade"]["preflight"].clone()).unwrap_or(Value::Null),
                "readiness": of(&|s| json!(s.readiness)),
                "state_schema": of(&|s| json!(s.state_schema)),
                "finalized_height": of(&|s| json!(s.finalized_height)),
                "certified_height": of(&|s| json!(s.certified_height)),
                "cup_height": of(&|s| json!(s.cup_height)),
                "state_hash": of(&|s| json!(s.state_hash)),
            }));
        }
        Ok::<_, String>(json!({
            "registry_url": registry_url,
            "package_url_base": l.package_url_base(),
            "hosts": if l.netns.is_some() { "netns" } else { "loopback" },
            "links": hosts::Links::load(dir).ok(),
            "dashboard_url": l.dashboard_url(),
            "registry_version": reg.map(|r| r.registry_version),
            "subnets": subnets,
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
            if n["spare"] == true && n["finalized_height"].is_null() {
                println!(
                    "node {i} (spare): alive {} subnet {} decision {}",
                    n["alive"], n["subnet_id"], n["decision"]
                );
                continue;
            }
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
            if i == 0 {
                // Every replica holds every node's word; one node's view is enough.
                for w in n["readiness"].as_array().into_iter().flatten() {
                    println!(
                        "        readiness of {} for {}: {} {}",
                        w["node_id"], w["version"], w["ready"], w["reason"]
                    );
                }
            }
        }
    }
    let down = report["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        // A spare runs no replica until a subnet's key is reshared to it.
        .filter(|(_, n)| {
            n["alive"] != true || (n["spare"] != true && n["finalized_height"].is_null())
        })
        .map(|(i, _)| i)
        .collect();
    Ok(down)
}

pub(crate) fn down(dir: &Path) -> Result<Value, String> {
    let l = layout(dir)?;
    let mut names: Vec<String> = l.machines().map(|(i, _)| format!("node-{i}")).collect();
    names.push("dashboard".into());
    names.push("packages".into());
    names.push("registry".into());
    names.push("links".into());
    for name in &names {
        stop(dir, name);
    }
    // Replicas run in their own process groups (the orchestrator's supervisor): stop
    // any the orchestrators left behind, by the pid in their status files.
    for (_, n) in l.machines() {
        stop_leftover_replica(&n.dir);
    }
    if let Some(net) = &l.netns {
        net.destroy()?;
    }
    Ok(json!({
        "summary": "testnet down",
        "stopped": names,
        "namespaces_removed": l.netns.is_some(),
    }))
}

/// Stops the process group recorded for `name`: SIGTERM, SIGKILL after the grace period.
pub(crate) fn stop(dir: &Path, name: &str) {
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

/// Node `node` of every machine (subnet nodes, then spares).
pub(crate) fn node_of(l: &Layout, node: usize) -> Result<&NodeLayout, String> {
    l.machines().nth(node).map(|(_, n)| n).ok_or_else(|| {
        format!(
            "--node {node}: the testnet has nodes 0 to {}",
            l.machines().count().saturating_sub(1)
        )
    })
}

pub(crate) fn stop_node(dir: &Path, node: usize) -> Result<Value, String> {
    let l = layout(dir)?;
    let n = node_of(&l, node)?;
    stop(dir, &format!("node-{node}"));
    stop_leftover_replica(&n.dir);
    Ok(json!({"node": node, "stopped": true, "summary": format!("node {node} stopped")}))
}

/// The operator's one step on a node: start the installed release's orchestrator; it
/// takes it from there.
pub(crate) fn start_orchestrator(dir: &Path, i: usize, n: &NodeLayout) -> Result<(), String> {
    let l = layout(dir)?;
    spawn(
        dir,
        &format!("node-{i}"),
        &mut orchestrator_command(&l, i, n),
    )
}

/// Node I's one process: its installed release's orchestrator, on its host.
fn orchestrator_command(l: &Layout, i: usize, n: &NodeLayout) -> Command {
    let mut c = l.command(
        hosts::Host::Node(i),
        &n.dir.join("images/current/bin/orchestrator"),
    );
    c.arg("--node-dir").arg(&n.dir);
    c
}

/// `partition --groups G` (or `heal` with none): the emulator follows links.json.
pub(crate) fn partition(dir: &Path, groups: Option<&str>) -> Result<Value, String> {
    let l = layout(dir)?;
    if l.netns.is_none() {
        return Err("partitions need a testnet prepared with --hosts netns".into());
    }
    let mut links = hosts::Links::load(dir)?;
    links.partition = match groups {
        Some(g) => hosts::parse_groups(g, l.nodes.len())?,
        None => Vec::new(),
    };
    links.store(dir)?;
    Ok(json!({
        "partition": links.partition,
        "summary": match groups {
            Some(g) => format!("partitioned: {g}"),
            None => "healed".to_string(),
        },
    }))
}

/// `shape`: every host's links, or node I's.
pub(crate) fn reshape(
    dir: &Path,
    node: Option<usize>,
    shape: hosts::Shape,
) -> Result<Value, String> {
    let l = layout(dir)?;
    if l.netns.is_none() {
        return Err("shaping links needs a testnet prepared with --hosts netns".into());
    }
    shape.validate()?;
    let mut links = hosts::Links::load(dir)?;
    match node {
        Some(i) => {
            node_of(&l, i)?;
            links.node_shapes.insert(i, shape);
        }
        None => {
            links.shape = shape;
            links.node_shapes.clear();
        }
    }
    links.store(dir)?;
    let summary = format!(
        "links: {}",
        serde_json::to_string(&links).map_err(|e| e.to_string())?
    );
    Ok(json!({"links": links, "summary": summary}))
}

pub(crate) fn start_node(
    dir: &Path,
    node: usize,
    clock_offset: Option<&str>,
) -> Result<Value, String> {
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
                orchestrator_command(&l, node, n)
                    .env("LD_PRELOAD", lib)
                    .env("FAKETIME", offset)
                    // Only the wall clock: the monotonic one keeps running as it does.
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            )?;
        }
    }
    Ok(json!({
        "node": node,
        "started": true,
        "clock_offset": clock_offset,
        "summary": format!("node {node} started"),
    }))
}

/// Where Debian's faketime package puts its library.
pub(crate) fn faketime_library() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
}

/// A replica whose orchestrator died without stopping it: find it by its node directory.
pub(crate) fn stop_leftover_replica(node_dir: &Path) {
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
