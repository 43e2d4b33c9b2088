//! The measurements, and the table they make.

use crate::net::{self, NetSizes};
use crypto::{bls::BlsSecretKey, ed25519::Ed25519KeyPair, threshold::deal};
use cup::{Cup, CupContent, RandomBeacon, SignedCup};
use rand::SeedableRng;
use registry::{
    client::RegistryClient,
    replicator::Replicator,
    server::{self, ServerState},
    store::{KeyChange, MemoryStore, RegistryStore, RocksStore, VersionDelta},
};
use replica::{
    ingress::{Ingress, Operation, SignedIngress, VerifiedSignatures},
    state::ReplicatedState,
};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};
use transport::{Member, Transport, TransportConfig};
use types::{CryptoHash, Height, RegistryVersion, ReplicaVersion, SubnetId, domain};

/// How much of each thing a run measures.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub ed25519: usize,
    pub bls: usize,
    pub cup: usize,
    pub rtt: usize,
    pub spawn: usize,
    pub state_values: usize,
    pub state_opens: usize,
    /// Blocks of [`EXECUTE_BLOCK`] puts timed for the execution floor.
    pub execute_blocks: usize,
    pub registry_versions: u64,
    pub registry_gets: usize,
    pub replicated_versions: u64,
    pub net: NetSizes,
}

impl Sizes {
    pub const FULL: Self = Self {
        ed25519: 5_000,
        bls: 300,
        cup: 100,
        rtt: 500,
        spawn: 50,
        state_values: 100_000,
        state_opens: 20,
        execute_blocks: 40,
        registry_versions: 1_000_000,
        registry_gets: 20_000,
        replicated_versions: 100_000,
        net: NetSizes::FULL,
    };
    pub const TINY: Self = Self {
        ed25519: 50,
        bls: 5,
        cup: 3,
        rtt: 10,
        spawn: 3,
        state_values: 100,
        state_opens: 2,
        execute_blocks: 2,
        registry_versions: 1_000,
        registry_gets: 100,
        replicated_versions: 2_000,
        net: NetSizes::TINY,
    };
}

/// One figure, and the limit it stands against (same unit), if any.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    pub limit: Option<String>,
    pub limit_value: Option<f64>,
    /// `value / limit_value`.
    pub ratio: Option<f64>,
    /// How many measurements the value summarizes (when it is a median or percentile).
    pub samples: Option<usize>,
}

impl Row {
    pub fn new(figure: String, value: f64, unit: &'static str) -> Self {
        Self {
            figure,
            value,
            unit,
            limit: None,
            limit_value: None,
            ratio: None,
            samples: None,
        }
    }

    pub fn samples(mut self, n: usize) -> Self {
        self.samples = Some(n);
        self
    }

    pub fn against(mut self, limit: &Row) -> Self {
        self.limit = Some(limit.figure.clone());
        self.limit_value = Some(limit.value);
        self.ratio = Some(self.value / limit.value);
        self
    }
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(f64::NAN)
}

/// Runs every measurement once, in order, on this thread (and a small runtime for QUIC).
pub fn all(s: &Sizes) -> Result<(Vec<Row>, Vec<net::NetFigures>), String> {
    crate::net::progress("limits: ed25519, BLS, QUIC round trip, spawn, state open");
    let ed = Row::new(
        "ed25519 verifications per second (one core)".into(),
        ed25519_per_s(s.ed25519)?,
        "1/s",
    );
    let bls_rate = bls_per_s(s.bls)?;
    let bls = Row::new(
        "BLS verifications per second (one core)".into(),
        bls_rate,
        "1/s",
    );
    let one_bls = Row::new("one BLS verification".into(), 1e3 / bls_rate, "ms");
    let rtt = Row::new(
        "QUIC round trip on loopback (median)".into(),
        quic_rtt_ms(s.rtt)?,
        "ms",
    );
    let spawn = Row::new(
        "spawning a process (median)".into(),
        spawn_ms(s.spawn)?,
        "ms",
    );
    let open = Row::new(
        format!("opening a state of {} values (median)", s.state_values),
        state_open_ms(s.state_values, 100, s.state_opens)?,
        "ms",
    );
    let execute = Row::new(
        format!(
            "executing one update (blocks of {EXECUTE_BLOCK} new puts on a state of {} values, median)",
            s.state_values
        ),
        execute_us_per_update(s.state_values, s.execute_blocks)?,
        "µs",
    );
    let cup = Row::new(
        "CUP decode and verification (n = 4, median)".into(),
        cup_verify_ms(s.cup)?,
        "ms",
    )
    .against(&one_bls);
    let restart = Row::new(
        "restart floor: a process spawn and a state open".into(),
        spawn.value + open.value,
        "ms",
    );
    crate::net::progress(&format!(
        "registry: {} versions in memory and on RocksDB",
        s.registry_versions
    ));
    let mem = Row::new(
        format!(
            "registry get at {} versions, in memory (median)",
            s.registry_versions
        ),
        registry_get_us(
            &mut MemoryStore::new(),
            s.registry_versions,
            s.registry_gets,
        )?,
        "µs",
    );
    let rocks_us = {
        // The store is dropped (closed) before its directory is removed.
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut store = RocksStore::open(dir.path()).map_err(|e| e.to_string())?;
        registry_get_us(&mut store, s.registry_versions, s.registry_gets)?
    };
    let rocks = Row::new(
        format!(
            "registry get at {} versions, RocksDB (median)",
            s.registry_versions
        ),
        rocks_us,
        "µs",
    )
    .against(&mem);
    crate::net::progress(&format!(
        "registry: replicating {} versions",
        s.replicated_versions
    ));
    let (replicated, local) = replicate_s(s.replicated_versions)?;
    let local = Row::new(
        format!(
            "appending {} registry versions to a local RocksDB store in pages of {}",
            s.replicated_versions,
            registry::api::MAX_VERSIONS_PER_PAGE
        ),
        local,
        "s",
    );
    let replicated = Row::new(
        format!(
            "replicating {} registry versions from a registry server (HTTP, signed pages)",
            s.replicated_versions
        ),
        replicated,
        "s",
    )
    .against(&local);
    // Handover floors: a spawn and opening a state of each size the network part grows.
    let mut floors = Vec::new();
    for &bytes in s.net.handover_bytes {
        let values = (bytes as usize).div_ceil(replica::ingress::MAX_VALUE_BYTES);
        crate::net::progress(&format!(
            "handover floor: building and opening a state of {}",
            net::size_name(bytes)
        ));
        let open = state_open_ms(values, replica::ingress::MAX_VALUE_BYTES, 3)?;
        floors.push((
            bytes,
            Row::new(
                format!(
                    "handover floor: a process spawn and opening a state of {}",
                    net::size_name(bytes)
                ),
                spawn.value + open,
                "ms",
            ),
        ));
    }
    let mut rows = vec![
        ed.clone(),
        bls,
        one_bls,
        rtt.clone(),
        spawn,
        open,
        restart.clone(),
        execute.clone(),
    ];
    rows.extend(floors.iter().map(|(_, r)| r.clone()));
    rows.extend([cup, mem, rocks, local, replicated]);
    let limits = net::Limits {
        rtt: &rtt,
        ed25519: &ed,
        execute: &execute,
        cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
        restart_floor: &restart,
        handover_floor: &floors,
    };
    let mut networks = Vec::new();
    for (i, &nodes) in s.net.nodes.iter().enumerate() {
        let f = net::measure(&s.net, nodes, i == 0, net::Hosts::Loopback)?;
        rows.extend(net::rows(&f, &limits));
        networks.push(f);
    }
    if !s.net.cross_host_nodes.is_empty() && !is_root() {
        crate::net::progress("across hosts: skipped (network namespaces need root)");
    } else {
        let hosts = net::Hosts::Netns {
            one_way_ms: net::CROSS_HOST_ONE_WAY_MS,
        };
        for &nodes in s.net.cross_host_nodes {
            let f = net::measure(&s.net, nodes, false, hosts)?;
            rows.extend(net::rows(&f, &limits));
            networks.push(f);
        }
    }
    Ok((rows, networks))
}

/// Whether this process runs as root (network namespaces need it); read from
/// `/proc/self/status` to need no binding to libc here.
fn is_root() -> bool {
    net::read_proc("self", "status")
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
}

/// Version `v` of a synthetic registry: it sets one of 100 keys, so every key has a
/// long history.
const SYNTHETIC_KEYS: u64 = 100;

fn synthetic_delta(v: u64) -> VersionDelta {
    VersionDelta {
        version: RegistryVersion::new(v),
        changes: vec![KeyChange {
            key: format!("bench_key_{}", v % SYNTHETIC_KEYS),
            value: Some(v.to_be_bytes().to_vec()),
        }],
    }
}

/// Appends versions `latest+1 ..= versions` in pages.
fn fill_registry(store: &mut impl RegistryStore, versions: u64, page: u64) -> Result<(), String> {
    let mut next = store.latest_version().get() + 1;
    while next <= versions {
        let last = (next + page - 1).min(versions);
        let deltas: Vec<_> = (next..=last).map(synthetic_delta).collect();
        store.append_all(&deltas).map_err(|e| e.to_string())?;
        next = last + 1;
    }
    Ok(())
}

/// A registry server over `versions` synthetic versions, and a node's replicator copying
/// them all into an empty RocksDB store (signed pages, verified); then the same pages
/// appended locally without a network. Both in seconds.
fn replicate_s(versions: u64) -> Result<(f64, f64), String> {
    let page = registry::api::MAX_VERSIONS_PER_PAGE as u64;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    {
        let mut store =
            RocksStore::open(&server::store_path(dir.path())).map_err(|e| e.to_string())?;
        fill_registry(&mut store, versions, 10_000)?;
    }
    let key = Ed25519KeyPair::from_seed(&[77; 32]);
    key.write_to_file(&server::key_path(dir.path()))
        .map_err(|e| e.to_string())?;
    let state = ServerState::open(dir.path()).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let replicated = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| e.to_string())?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let server = tokio::spawn(server::serve(listener, state));
        let client =
            RegistryClient::new(&url, Some(key.public_key())).map_err(|e| e.to_string())?;
        let replicator = Replicator::new(client, true).map_err(|e| e.to_string())?;
        let follower_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let follower = std::sync::Mutex::new(
            RocksStore::open(follower_dir.path()).map_err(|e| e.to_string())?,
        );
        let start = Instant::now();
        loop {
            let p = replicator
                .poll_once(&follower)
                .await
                .map_err(|e| e.to_string())?;
            if p.local_version.get() >= versions {
                break;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        server.abort();
        let got = follower
            .lock()
            .map_err(|_| "follower lock".to_string())?
            .get("bench_key_7", RegistryVersion::new(versions))
            .map_err(|e| e.to_string())?;
        // The newest version at or below `versions` that wrote bench_key_7.
        let want = Some(
            (versions - (versions + SYNTHETIC_KEYS - 7) % SYNTHETIC_KEYS)
                .to_be_bytes()
                .to_vec(),
        );
        if got != want {
            return Err(format!(
                "the replicated store reads {got:?} for bench_key_7, not {want:?}"
            ));
        }
        Ok::<f64, String>(elapsed)
    })?;
    let local_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut local = RocksStore::open(local_dir.path()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    fill_registry(&mut local, versions, page)?;
    Ok((replicated, start.elapsed().as_secs_f64()))
}

fn ed25519_per_s(n: usize) -> Result<f64, String> {
    let key = Ed25519KeyPair::from_seed(&[7; 32]);
    let public = key.public_key();
    let messages: Vec<[u8; 32]> = (0..n as u64)
        .map(|i| {
            let mut m = [0u8; 32];
            m[..8].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    let signatures: Vec<_> = messages
        .iter()
        .map(|m| key.sign(domain::INGRESS, m))
        .collect();
    let start = Instant::now();
    for (m, sig) in messages.iter().zip(&signatures) {
        public
            .verify(domain::INGRESS, m, sig)
            .map_err(|e| format!("ed25519: {e}"))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn bls_per_s(n: usize) -> Result<f64, String> {
    let sk = BlsSecretKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(7));
    let pk = sk.public_key();
    let messages: Vec<[u8; 8]> = (0..n as u64).map(|i| i.to_be_bytes()).collect();
    let signatures: Vec<_> = messages
        .iter()
        .map(|m| sk.sign(domain::NOTARIZATION, m))
        .collect();
    let start = Instant::now();
    for (m, sig) in messages.iter().zip(&signatures) {
        pk.verify(domain::NOTARIZATION, m, sig)
            .map_err(|e| format!("BLS: {e}"))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn cup_verify_ms(n: usize) -> Result<f64, String> {
    let d =
        deal(4, 3, &mut rand_chacha::ChaCha20Rng::seed_from_u64(7)).map_err(|e| e.to_string())?;
    let content = CupContent {
        subnet_id: SubnetId::from_threshold_public_key(&d.public.group_key.to_bytes()),
        height: Height::new(100),
        block_hash: CryptoHash::of(domain::BLOCK_HASH, b"bench summary block"),
        block_time_ns: 1_795_000_000_000_000_000,
        registry_version: RegistryVersion::new(7),
        replica_version: ReplicaVersion::new("1.0.0").map_err(|e| e.to_string())?,
        random_beacon: RandomBeacon(vec![0xab; 96]),
        state_hash: CryptoHash::of(domain::STATE_HASH, b"bench state"),
        oldest_registry_version_in_use: RegistryVersion::new(5),
        next_replica_version: None,
        committee: None,
        extensions: BTreeMap::new(),
    };
    let shares: Vec<_> = d.shares[..3]
        .iter()
        .map(|s| SignedCup::sign_share(&content, s))
        .collect();
    let signed = SignedCup::combine(content, &d.public, &shares).map_err(|e| e.to_string())?;
    let bytes = Cup::Signed(signed).encode();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        match Cup::decode(&bytes).map_err(|e| e.to_string())? {
            Cup::Signed(c) => c.verify(&d.public.group_key).map_err(|e| e.to_string())?,
            Cup::Registry(_) => return Err("the CUP decoded as a registry CUP".into()),
        }
        samples.push(start.elapsed());
    }
    Ok(median_ms(samples))
}

fn spawn_ms(n: usize) -> Result<f64, String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let status = std::process::Command::new("true")
            .status()
            .map_err(|e| format!("spawning `true`: {e}"))?;
        if !status.success() {
            return Err(format!("`true` exited with {status}"));
        }
        samples.push(start.elapsed());
    }
    Ok(median_ms(samples))
}

/// Builds a state of `values` values of `bytes` each (as blocks of signed puts), then
/// times opening it.
fn state_open_ms(values: usize, bytes: usize, opens: usize) -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("state");
    build_state(&path, values, bytes)?;
    let mut samples = Vec::with_capacity(opens);
    for _ in 0..opens {
        let start = Instant::now();
        let s = ReplicatedState::open(&path).map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
        drop(s);
    }
    Ok(median_ms(samples))
}

/// The network of the states built here (no registry: any id will do).
const BENCH_NETWORK: types::NetworkId = types::NetworkId([1; 32]);

fn build_state(path: &Path, values: usize, bytes: usize) -> Result<(), String> {
    let mut state = ReplicatedState::open(path).map_err(|e| e.to_string())?;
    let now = replica::now_ns();
    // About the 2 MiB a block carries at most, and at most 1,000 updates.
    let per_block = (replica::start::MAX_PAYLOAD_BYTES / bytes).clamp(1, 1_000);
    // Execution's per-sender quotas (bytes in one block, bytes stored) apply here as on
    // a subnet: the updates come from many senders, each within its share of a block.
    let per_sender = (replica::ingress::MAX_BLOCK_BYTES_PER_SENDER / (bytes + 256)).max(1);
    let sender = |i: usize| {
        let mut seed = [9u8; 32];
        seed[..8].copy_from_slice(&((i / per_sender) as u64).to_le_bytes());
        Ed25519KeyPair::from_seed(&seed)
    };
    let mut height = state.height();
    for first in (0..values).step_by(per_block) {
        let block: Vec<SignedIngress> = (first..(first + per_block).min(values))
            .map(|i| {
                let user = sender(i);
                SignedIngress::sign(
                    Ingress {
                        network: BENCH_NETWORK,
                        sender: user.public_key(),
                        nonce: i as u64,
                        expiry_ns: now + 60_000_000_000,
                        operation: Operation::Put {
                            key: format!("k{i:08}"),
                            value: vec![(i % 251) as u8; bytes],
                        },
                    },
                    &user,
                )
            })
            .collect();
        height = height.increment();
        let r = state
            .execute(height, now, &BENCH_NETWORK, &block)
            .map_err(|e| e.to_string())?;
        if r.executed.len() != block.len() {
            return Err(format!(
                "building the state: {} of {} puts executed",
                r.executed.len(),
                block.len()
            ));
        }
    }
    Ok(())
}

/// Updates in each block the execution floor times: about what a saturated 4-node
/// subnet's blocks carry.
const EXECUTE_BLOCK: usize = 500;

/// Microseconds of execution per update, the work every node does for every update
/// besides checking its signature: blocks of [`EXECUTE_BLOCK`] new 16-byte puts (the
/// throughput load's shape) from 64 senders on a state of `values` values, their
/// signatures checked beforehand as the ingress pool does. Median over `blocks` blocks.
fn execute_us_per_update(values: usize, blocks: usize) -> Result<f64, String> {
    const SENDERS: usize = 64;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("state");
    build_state(&path, values, 100)?;
    let mut state = ReplicatedState::open(&path).map_err(|e| e.to_string())?;
    let users: Vec<Ed25519KeyPair> = (0..SENDERS)
        .map(|i| Ed25519KeyPair::from_seed(&[i as u8 + 100; 32]))
        .collect();
    let now = replica::now_ns();
    let mut verified = VerifiedSignatures::default();
    let mut height = state.height();
    let mut samples = Vec::with_capacity(blocks);
    for b in 0..blocks {
        let block: Vec<SignedIngress> = (0..EXECUTE_BLOCK)
            .map(|i| {
                let user = &users[i % SENDERS];
                let n = (b * EXECUTE_BLOCK + i) as u64;
                SignedIngress::sign(
                    Ingress {
                        network: BENCH_NETWORK,
                        sender: user.public_key(),
                        nonce: n,
                        expiry_ns: now + 60_000_000_000,
                        operation: Operation::Put {
                            // Spread over the key space, as users' keys are.
                            key: format!("x{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                            value: n.to_be_bytes().repeat(2),
                        },
                    },
                    user,
                )
            })
            .collect();
        for m in &block {
            verified.verify(m).map_err(|e| e.to_string())?;
        }
        height = height.increment();
        let start = Instant::now();
        let r = state
            .execute_with(height, now, &BENCH_NETWORK, &block, &mut verified)
            .map_err(|e| e.to_string())?;
        samples.push(start.elapsed() / EXECUTE_BLOCK as u32);
        if r.executed.len() != block.len() {
            return Err(format!(
                "execution floor: {} of {} puts executed",
                r.executed.len(),
                block.len()
            ));
        }
    }
    Ok(median_ms(samples) * 1e3)
}

/// Appends `versions` synthetic versions (in batches of 10,000: one synced write each),
/// then times `get` of random keys at random versions.
fn registry_get_us(
    store: &mut impl RegistryStore,
    versions: u64,
    gets: usize,
) -> Result<f64, String> {
    const KEYS: u64 = SYNTHETIC_KEYS;
    fill_registry(store, versions, 10_000)?;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    let mut samples = Vec::with_capacity(gets);
    for _ in 0..gets {
        let key = format!("bench_key_{}", rand::Rng::random_range(&mut rng, 0..KEYS));
        let at = RegistryVersion::new(rand::Rng::random_range(&mut rng, KEYS..=versions.max(KEYS)));
        let start = Instant::now();
        let got = store.get(&key, at).map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
        if got.is_none() {
            return Err(format!("{key} missing at version {at}"));
        }
    }
    Ok(median_ms(samples) * 1e3)
}

/// Median round trip of a small message between two transports on loopback.
fn quic_rtt_ms(n: usize) -> Result<f64, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let key = |seed: u8| Ed25519KeyPair::from_seed(&[seed; 32]);
        let cfg = || {
            TransportConfig::new(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                replica::WIRE_PROTOCOL,
            )
        };
        let (a, mut a_rx) = Transport::start(cfg(), key(1), vec![])
            .await
            .map_err(|e| e.to_string())?;
        let (b, mut b_rx) = Transport::start(cfg(), key(2), vec![])
            .await
            .map_err(|e| e.to_string())?;
        let member = |t: &Transport, seed: u8| Member {
            node_id: key(seed).node_id(),
            public_key: key(seed).public_key(),
            address: t.local_addr(),
        };
        let members = vec![member(&a, 1), member(&b, 2)];
        a.set_members(members.clone()).map_err(|e| e.to_string())?;
        b.set_members(members).map_err(|e| e.to_string())?;
        let a_id = key(1).node_id();
        let b_id = key(2).node_id();
        // B echoes what it gets.
        let echo = b.clone();
        let echoer = tokio::spawn(async move {
            while let Some((from, bytes)) = b_rx.recv().await {
                echo.send(from, bytes);
            }
        });
        // The first exchange waits for the connection; it is not a sample.
        let connect_by = Instant::now() + Duration::from_secs(30);
        loop {
            a.send(b_id, b"ping".to_vec());
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), a_rx.recv()).await
            {
                break;
            }
            if Instant::now() > connect_by {
                return Err("the two transports did not connect within 30 s".to_string());
            }
        }
        let mut samples = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let start = Instant::now();
            // The transport may drop a message (a connection replaced while both sides
            // dial, as consensus tolerates): sent again after a second, five times.
            let mut echoed = false;
            for _ in 0..5 {
                a.send(b_id, i.to_be_bytes().to_vec());
                let by = Instant::now() + Duration::from_secs(1);
                while let Ok(Some((from, bytes))) =
                    tokio::time::timeout_at(by.into(), a_rx.recv()).await
                {
                    // Anything else is a late echo of the connection probes or a resend.
                    if from == b_id && bytes == i.to_be_bytes() {
                        echoed = true;
                        break;
                    }
                }
                if echoed {
                    break;
                }
            }
            if !echoed {
                return Err(format!("no echo of message {i} in five tries of 1 s"));
            }
            samples.push(start.elapsed());
        }
        echoer.abort();
        let _ = a_id;
        a.shutdown().await;
        b.shutdown().await;
        Ok(median_ms(samples))
    })
}

/// The machine, for the table's header.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB, Linux {kernel}")
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The Markdown table, with the machine, the command and how long the run took.
pub fn table(rows: &[Row], tiny: bool, took: Duration) -> String {
    let took = if took.as_secs() < 120 {
        format!("{} s", took.as_secs())
    } else {
        format!("{:.0} minutes", took.as_secs_f64() / 60.0)
    };
    let mut out = format!(
        "Machine: {}. Command: `scripts/bench.sh{}` ({took}{}).\n\n| figure | value | samples | stands against | limit | ratio |\n|---|---|---|---|---|---|\n",
        machine(),
        if tiny { " --tiny" } else { "" },
        if tiny {
            "; toy sizes, not figures to quote"
        } else {
            ""
        },
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} {} | {} | {} | {} | {} |\n",
            r.figure,
            number(r.value),
            r.unit,
            r.samples.map(|n| n.to_string()).unwrap_or_default(),
            r.limit.as_deref().unwrap_or("(a limit)"),
            r.limit_value
                .map(|l| format!("{} {}", number(l), r.unit))
                .unwrap_or_default(),
            r.ratio.map(number).unwrap_or_default()
        ));
    }
    out
}

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

/// Puts `table` between the markers in `path` (appending a marked section if there is
/// none); the rest of the file is kept as it was.
pub fn write_between_markers(path: &Path, table: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let marked = format!("{START}\n{table}{END}");
    let new = match (text.find(START), text.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{marked}{}", &text[..a], &text[b + END.len()..]),
        (None, None) => format!("{}\n{marked}\n", text.trim_end()),
        _ => {
            return Err(format!(
                "{}: the markers {START} and {END} are not in order",
                path.display()
            ));
        }
    };
    durable::write(path, new.as_bytes()).map_err(|e| e.to_string())
}
