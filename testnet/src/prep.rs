//! `testnet prep` (a network written to a directory) and `testnet package` (a release
//! package of the binaries beside `testnet`).

use super::*;

pub(crate) fn package(
    version: &str,
    out: &Path,
    next: bool,
    broken: Option<replica::cli::Drill>,
) -> Result<String, String> {
    let v = ReplicaVersion::new(version).map_err(|e| format!("--version: {e}"))?;
    let replica = bin(if next { "replica-next" } else { "replica" })?;
    let orchestrator = bin("orchestrator")?;
    let mut files = vec![
        ("bin/replica", replica.clone()),
        ("bin/orchestrator", orchestrator),
    ];
    // The drill's fault travels in the package (and so in its hash), never in a flag.
    let drill = out.with_extension("drill");
    if let Some(d) = broken {
        std::fs::write(&drill, d.name()).map_err(io(&drill))?;
        files.push((replica::cli::DRILL_FILE, drill.clone()));
    }
    let listed: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let built = release::build_package(out, &v, "testnet", &listed).map_err(|e| e.to_string());
    if broken.is_some() {
        let _ = std::fs::remove_file(&drill);
    }
    built
}

pub(crate) fn prep(dir: &Path, args: &PrepArgs) -> Result<Value, String> {
    let (nodes, base) = (args.nodes, args.base_port.unwrap_or(31000));
    if dir.join("testnet.json").exists() {
        return Err(format!("{} already holds a testnet", dir.display()));
    }
    if !(1..=40).contains(&nodes) {
        return Err("--nodes must be between 1 and 40".into());
    }
    if args.spare > 40 {
        return Err("--spare must be between 0 and 40".into());
    }
    if args.nns_nodes > 40 {
        return Err("--nns-nodes must be between 0 and 40".into());
    }
    let machines = nodes + args.spare + args.nns_nodes;
    if u32::from(base) + 10 + 4 * machines as u32 > 65535 {
        return Err("--base-port leaves no room for every node's ports".into());
    }
    if args.hosts == Hosts::Loopback && args.shape != hosts::Shape::default() {
        return Err(
            "--latency-ms, --jitter-ms, --loss-pct and --rate-mbit need --hosts netns".into(),
        );
    }
    args.shape.validate()?;
    let packages = dir.join("packages");
    std::fs::create_dir_all(&packages).map_err(io(&packages))?;
    // With --hosts netns, an index of the address range is reserved now: the addresses
    // go into the registry's records and every node.toml.
    let netns = match args.hosts {
        Hosts::Loopback => None,
        Hosts::Netns => Some(hosts::Netns::claim(dir, machines)?),
    };
    let infra_host = match &netns {
        Some(n) => n.address(hosts::Host::Infra).to_string(),
        None => loopback_host(),
    };
    let first = packages.join(format!("{FIRST_VERSION}.tar.zst"));
    let sha = package(FIRST_VERSION, &first, false, None)?;
    let mut layout = Layout {
        registry_port: base,
        package_port: base + 1,
        nodes: Vec::new(),
        spares: Vec::new(),
        nns: Vec::new(),
        nns_key: None,
        infra_host,
        netns,
    };
    let params = NetworkParams {
        nodes,
        neurons: args.neurons,
        dkg_interval_length: args.dkg_interval,
        unit_delay_ms: 200,
        initial_notary_delay_ms: 100,
        base_port: base,
        replica_version: ReplicaVersion::new(FIRST_VERSION).map_err(|e| e.to_string())?,
        package_sha256: sha.clone(),
        package_urls: vec![format!(
            "{}/{FIRST_VERSION}.tar.zst",
            layout.package_url_base()
        )],
        genesis_time_ns: registry::server::now_ns(),
    };
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let mut net = generate_network(&params, &mut rng).map_err(|e| e.to_string())?;
    net.add_spares(args.spare, base, &mut rng);
    if args.nns_nodes > 0 {
        net.add_nns_subnet(&params, args.nns_nodes, &mut rng)
            .map_err(|e| e.to_string())?;
    }
    let records = net
        .nodes
        .iter_mut()
        .map(|n| &mut n.record)
        .chain(net.spares.iter_mut().map(|n| &mut n.record))
        .chain(net.nns.iter_mut().map(|n| &mut n.record));
    for (i, record) in records.enumerate() {
        // Separate hosts use the same ports, each on its own address.
        let (host, p) = match &layout.netns {
            Some(ns) => (
                ns.address(hosts::Host::Node(i)).to_string(),
                base as usize + 10,
            ),
            None => (loopback_host(), base as usize + 10 + 4 * i),
        };
        record.consensus_address = format!("{host}:{p}");
        record.http_address = format!("{host}:{}", p + 1);
        record.cup_address = format!("{host}:{}", p + 2);
        net.genesis.nodes[i] = record.clone();
        let machine = NodeLayout {
            node_id: record.node_id.to_string(),
            dir: dir.join("nodes").join(format!("node-{i}")),
            consensus_address: record.consensus_address.clone(),
            http_address: record.http_address.clone(),
            orchestrator_address: record.cup_address.clone(),
        };
        if i < nodes {
            layout.nodes.push(machine);
        } else if i < nodes + args.spare {
            layout.spares.push(machine);
        } else {
            layout.nns.push(machine);
        }
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
    // With an NNS subnet, every node replicates the registry from its nodes (pages
    // certified by its key) and starts from the genesis registry (version 1) in its own
    // copy: the NNS subnet's nodes need it to start at all.
    let nns = match net.genesis.subnets.get(1) {
        Some(s) if args.nns_nodes > 0 => Some((
            layout.nns_urls(),
            hex::encode(s.high_threshold_key.group_key.to_bytes()),
        )),
        _ => None,
    };
    layout.nns_key = nns.as_ref().map(|(_, key)| key.clone());
    for (_, n) in layout.machines() {
        let mut config = orchestrator::config::NodeConfig::new(
            vec![layout.registry_url()],
            root_key.trim().to_string(),
            n.orchestrator_address
                .parse()
                .map_err(|e| format!("{}: {e}", n.orchestrator_address))?,
            300,
            args.webhooks.clone(),
        );
        if let Some((urls, key)) = &nns {
            config = config.with_nns(urls.clone(), key.clone());
            let store = registry::store::RocksStore::open(&n.dir.join("registry"))
                .map_err(|e| format!("{}: {e}", n.dir.display()))?;
            let mut copy = registry::Registry::open(store).map_err(|e| e.to_string())?;
            copy.init(
                &net.genesis.mutations(),
                net.genesis
                    .voting_period_seconds
                    .saturating_mul(1_000_000_000),
            )
            .map_err(|e| format!("the genesis registry in {}: {e}", n.dir.display()))?;
        }
        config
            .validate()
            .map_err(|e| format!("node.toml for {}: {e}", n.dir.display()))?;
        let path = n.dir.join(orchestrator::config::FILE_NAME);
        std::fs::write(&path, config.to_toml()?).map_err(io(&path))?;
        let images = n.dir.join("images");
        release::unpack(&verified, &v1, &images).map_err(|e| e.to_string())?;
        release::switch_current(&images, verified.sha256()).map_err(|e| e.to_string())?;
    }
    if layout.netns.is_some() {
        let links = hosts::Links {
            shape: args.shape,
            ..Default::default()
        };
        links.store(dir)?;
    }
    let text = serde_json::to_string_pretty(&layout).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("testnet.json"), text + "\n").map_err(io(dir))?;
    Ok(json!({
        "summary": format!(
            "prepared {} nodes{}{} in {}; start them with: testnet up --dir {}",
            layout.nodes.len(),
            match layout.spares.len() {
                0 => String::new(),
                k => format!(" and {k} spare node{}", if k == 1 { "" } else { "s" }),
            },
            match layout.nns.len() {
                0 => String::new(),
                k => format!(", an NNS subnet of {k}"),
            },
            dir.display(),
            dir.display()
        ),
        "dir": dir.display().to_string(),
        "nodes": layout.nodes.len(),
        "spares": layout.spares.iter().map(|n| n.node_id.clone()).collect::<Vec<_>>(),
        "nns_nodes": layout.nns.iter().map(|n| n.node_id.clone()).collect::<Vec<_>>(),
        "hosts": if layout.netns.is_some() { "netns" } else { "loopback" },
        "registry_url": layout.registry_url(),
        "package_url_base": layout.package_url_base(),
        "netns_index": layout.netns.as_ref().map(|n| n.index),
    }))
}

/// A base port with room for `nodes` above it, where nothing listens now (TCP or UDP),
/// below the kernel's ephemeral range: a port in that range can be taken at any moment
/// by some process's outgoing connection (a QUIC dial, an HTTP client), between this
/// check and the node binding it, and a 13-node testnet needs over 60 of them.
pub(crate) fn free_base(nodes: usize) -> Result<u16, String> {
    use rand::Rng;
    let span = 10 + 4 * nodes as u16;
    // Two numbers and a tab: a few bytes.
    const MAX_PORT_RANGE_BYTES: u64 = 64;
    let ephemeral_low = durable::read_bounded(
        Path::new("/proc/sys/net/ipv4/ip_local_port_range"),
        MAX_PORT_RANGE_BYTES,
    )
    .ok()
    .and_then(|r| String::from_utf8(r).ok())
    .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
    .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(span));
    if high <= low {
        return Err(format!(
            "no room for {span} ports below the ephemeral range (starting at {ephemeral_low}): give --base-port"
        ));
    }
    let mut rng = rand::rng();
    for _ in 0..100 {
        let base = rng.random_range(low..high);
        if (base..base + span).all(|p| {
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        }) {
            return Ok(base);
        }
    }
    Err("no free range of loopback ports".into())
}
