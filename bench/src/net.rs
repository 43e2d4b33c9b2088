//! The figures that need a network of nodes: local testnets started with the `testnet`
//! command and governed with the `nns` command, exactly as a developer would, then
//! measured over their public HTTP APIs.
//!
//! - Finality latency: an update's submission to the answer of
//!   `GET /api/v1/request_status?wait_ms=…` saying it is certified.
//! - Throughput: updates executed per second (`replica_messages_executed_total`) while
//!   senders keep every pool full.
//! - Upgrade downtime: the last block with updates the old release executed to the first
//!   the new release executed (`last_payload` / `first_payload` in each replica's
//!   status; the earliest node's wall clock for each, all on one machine).
//!   Each node's downtime is also cut into the handover's stages ([`Stages`]) from its
//!   orchestrator's `upgrade.last_switch`.
//! - Deploy to running: the deploy proposal's adoption to every orchestrator reporting
//!   the new release.
//! - State handover: the first node reporting `halted` to the first node finalizing past
//!   the CUP on the new release (nothing else running, so only the state's size varies).

mod procs;
pub(crate) use procs::read_proc;
mod stages;
mod testnet;

pub use procs::KindCost;
use stages::node_stages;
pub use stages::{Stages, SwitchCounts};

use crate::measure::Row;
use crypto::ed25519::Ed25519KeyPair;
use replica::{
    client::ReplicaClient,
    ingress::{Ingress, Operation, SignedIngress},
    requests::RequestState,
};
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use testnet::{Testnet, client, get_json};
use tokio::runtime::Runtime;
use types::NetworkId;

/// How much of each thing the network part measures.
#[derive(Clone, Debug)]
pub struct NetSizes {
    /// Node counts: each gets a network with latency, throughput and `upgrades` upgrades.
    pub nodes: &'static [usize],
    pub upgrades: usize,
    pub latency_seconds: u64,
    /// Updates per second while latency is measured (well under the throughput).
    pub latency_rate: u64,
    pub throughput_seconds: u64,
    pub throughput_senders: usize,
    /// Updates per second during the upgrades, so that blocks carry updates.
    pub background_rate: u64,
    /// State sizes (user bytes) for the handover, grown in turn on the first network.
    pub handover_bytes: &'static [u64],
    /// Node counts measured again across hosts (a network namespace each, every link
    /// [`CROSS_HOST_ONE_WAY_MS`] each way): finality and `cross_host_upgrades`
    /// upgrades. Skipped, with a note, where namespaces cannot be made (not root).
    pub cross_host_nodes: &'static [usize],
    pub cross_host_upgrades: usize,
}

/// Each host's outgoing link in the cross-host series: a 50 ms round trip.
pub const CROSS_HOST_ONE_WAY_MS: u32 = 25;

/// Where a measured network's nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Hosts {
    /// Every process on this host's loopback.
    Loopback,
    /// A network namespace per node behind the testnet's link emulator.
    Netns { one_way_ms: u32 },
}

impl NetSizes {
    pub const FULL: Self = Self {
        nodes: &[4, 7, 13],
        upgrades: 10,
        latency_seconds: 30,
        latency_rate: 20,
        throughput_seconds: 20,
        throughput_senders: 64,
        background_rate: 20,
        handover_bytes: &[1 << 20, 100 << 20, 1 << 30],
        cross_host_nodes: &[4, 7],
        cross_host_upgrades: 5,
    };
    pub const TINY: Self = Self {
        // 13: the Internet Computer's usual subnet size, upgraded at toy size too.
        nodes: &[4, 13],
        upgrades: 2,
        latency_seconds: 3,
        latency_rate: 10,
        throughput_seconds: 3,
        throughput_senders: 2,
        background_rate: 10,
        handover_bytes: &[256 << 10],
        cross_host_nodes: &[4],
        cross_host_upgrades: 1,
    };
}

/// The largest value an update may carry: the state grows fastest with these.
const FILL_VALUE_BYTES: usize = replica::ingress::MAX_VALUE_BYTES;
/// A guard against a stuck network, not a speed figure.
const PATIENCE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(50);

/// One upgrade's times.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct UpgradeTimes {
    pub downtime_ms: Option<f64>,
    pub deploy_to_running_ms: f64,
    /// From the halt (the first node's replica writing the CUP that names the new
    /// release, from its orchestrator's `upgrade.last_switch`; else the first poll that
    /// caught a node halted, if one did) to the first poll that found a node finalizing
    /// past the CUP on the new release. A switch now takes less than two polls, so the
    /// halt is not left to a poll to catch.
    pub handover_ms: Option<f64>,
    /// Each node's downtime cut into its stages (the median over the nodes of each).
    pub stages: Option<Stages>,
    pub switches: SwitchCounts,
}

/// What one network measured (the raw samples behind its rows, for `--json`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NetFigures {
    pub nodes: usize,
    pub hosts: Option<Hosts>,
    /// Across hosts: the round trip between two nodes (twice the fastest of a few TCP
    /// connects from this host, whose link is not shaped, to node 0), the floor beside
    /// finality and downtime.
    pub round_trip_ms: Option<f64>,
    pub latency_ms: Vec<f64>,
    pub latency_failures: usize,
    pub throughput: f64,
    pub pools_at_end_of_throughput: Vec<Option<u64>>,
    pub executed_in_throughput_window: u64,
    /// What each kind of process spent in the throughput window.
    pub costs_in_throughput_window: Vec<KindCost>,
    pub upgrades: Vec<UpgradeTimes>,
    /// `(state bytes, handover)`.
    pub handovers: Vec<(u64, UpgradeTimes)>,
}

pub fn progress(what: &str) {
    eprintln!("bench: {what}");
}

fn put(
    user: &Ed25519KeyPair,
    network: NetworkId,
    nonce: u64,
    key: String,
    value: Vec<u8>,
) -> SignedIngress {
    SignedIngress::sign(
        Ingress {
            network,
            sender: user.public_key(),
            nonce,
            expiry_ns: replica::now_ns() + 120_000_000_000,
            operation: Operation::Put { key, value },
        },
        user,
    )
}

/// The typed client of the replica at `url`; a call that is not waiting gives up after
/// five seconds.
fn replica(client: &reqwest::Client, url: &str) -> ReplicaClient {
    ReplicaClient::new(client.clone(), url, Duration::from_secs(5))
}

/// Submits; the message id if the replica accepted it.
async fn submit(client: &reqwest::Client, url: &str, m: &SignedIngress) -> Option<String> {
    replica(client, url).update(m).await.ok()
}

/// One update from submission to certification, as a user sees it.
async fn one_finality(client: reqwest::Client, url: String, m: SignedIngress) -> Option<f64> {
    let start = Instant::now();
    let id = submit(&client, &url, &m).await?;
    // The replica answers when the update is certified (or after a minute).
    let s = replica(&client, &url)
        .request_status(&id, Duration::from_secs(60))
        .await
        .ok()?;
    (s.status == RequestState::Certified).then(|| start.elapsed().as_secs_f64() * 1e3)
}

/// Finality latencies at `rate` updates per second for `seconds`; failures counted.
fn latency(
    rt: &Runtime,
    net: &Testnet,
    rate: u64,
    seconds: u64,
) -> Result<(Vec<f64>, usize), String> {
    let client = client()?;
    let user = Ed25519KeyPair::from_seed(&[41; 32]);
    let urls = net.replicas.clone();
    rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
        let base = replica::now_ns();
        for n in 0..rate * seconds {
            tick.tick().await;
            let m = put(
                &user,
                net.network,
                base + n,
                format!("latency-{base}-{n}"),
                b"x".to_vec(),
            );
            let url = urls[n as usize % urls.len()].clone();
            tasks.spawn(one_finality(client.clone(), url, m));
        }
        let mut samples = Vec::new();
        let mut failures = 0;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Some(ms)) => samples.push(ms),
                _ => failures += 1,
            }
        }
        if samples.is_empty() {
            return Err("no update was certified".to_string());
        }
        Ok((samples, failures))
    })
}

/// What [`spawn_senders`] sends.
#[derive(Clone, Copy, Debug)]
struct Load {
    /// The network the updates are signed for.
    network: NetworkId,
    senders: usize,
    /// Updates per second per sender; `None`: as fast as the replicas accept them.
    rate: Option<u64>,
    value_bytes: usize,
    /// Senders stop once this many value bytes were accepted.
    budget: Option<u64>,
}

/// Sends signed updates from `load.senders` tasks until `stop` (or the budget); each
/// backs off briefly when a replica refuses (pool full, upgrading, down).
fn spawn_senders(
    rt: &Runtime,
    urls: &[String],
    load: Load,
    stop: Arc<AtomicBool>,
    accepted_bytes: Arc<AtomicU64>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let client = client()?;
    let Load {
        network,
        senders,
        rate,
        value_bytes,
        budget,
    } = load;
    Ok((0..senders)
        .map(|s| {
            let client = client.clone();
            let urls = urls.to_vec();
            let stop = stop.clone();
            let accepted = accepted_bytes.clone();
            rt.spawn(async move {
                let user = Ed25519KeyPair::from_seed(&[100 + s as u8; 32]);
                let base = replica::now_ns();
                let mut tick = rate
                    .map(|r| tokio::time::interval(Duration::from_nanos(1_000_000_000 / r.max(1))));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed)
                    && budget.is_none_or(|b| accepted.load(Ordering::Relaxed) < b)
                {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    n += 1;
                    let m = put(
                        &user,
                        network,
                        base + n,
                        format!("s{s}-{base}-{n}"),
                        vec![(n % 251) as u8; value_bytes],
                    );
                    let url = &urls[(n as usize + s) % urls.len()];
                    if submit(&client, url, &m).await.is_some() {
                        accepted.fetch_add(value_bytes as u64, Ordering::Relaxed);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect())
}

fn stop_senders(rt: &Runtime, stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = rt.block_on(t);
    }
}

async fn executed_total(client: &reqwest::Client, url: &str) -> Option<u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("replica_messages_executed_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// Each node's ingress pool (`None`: no answer).
fn pools(rt: &Runtime, client: &reqwest::Client, net: &Testnet) -> Vec<Option<u64>> {
    net.replicas
        .iter()
        .map(|u| {
            rt.block_on(replica(client, u).status())
                .ok()
                .map(|s| s.ingress_pool as u64)
        })
        .collect()
}

/// Waits until no node has updates waiting (what was accepted has executed).
fn drain(rt: &Runtime, net: &Testnet) -> Result<(), String> {
    let client = client()?;
    let start = Instant::now();
    loop {
        let pools = pools(rt, &client, net);
        if pools.iter().all(|p| *p == Some(0)) {
            return Ok(());
        }
        if start.elapsed() > PATIENCE {
            return Err(format!("the ingress pools did not drain: {pools:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Updates executed per second (node 0's counter) while `senders` keep the pools full.
/// Also returns each node's ingress pool at the end of the window (non-empty: the
/// senders kept the subnet saturated).
fn throughput(
    rt: &Runtime,
    net: &Testnet,
    senders: usize,
    seconds: u64,
) -> Result<Throughput, String> {
    let client = client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = spawn_senders(
        rt,
        &net.replicas,
        Load {
            network: net.network,
            senders,
            rate: None,
            value_bytes: 16,
            budget: None,
        },
        stop.clone(),
        Arc::default(),
    )?;
    // Fill the pools before counting.
    std::thread::sleep(Duration::from_secs(2));
    let url = &net.replicas[0];
    let procs_before = procs::Snapshot::take(net.dir.path());
    let before = rt.block_on(executed_total(&client, url));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = rt.block_on(executed_total(&client, url));
    let elapsed = t0.elapsed().as_secs_f64();
    let costs = procs::Snapshot::take(net.dir.path()).since(&procs_before);
    let pools = pools(rt, &client, net);
    stop_senders(rt, &stop, tasks);
    drain(rt, net)?;
    match (before, after) {
        (Some(b), Some(a)) if a > b => Ok(Throughput {
            per_second: (a - b) as f64 / elapsed,
            executed: a - b,
            pools,
            costs,
        }),
        _ => Err(format!(
            "node 0 executed nothing while loaded ({before:?} then {after:?})"
        )),
    }
}

/// The throughput window's figures.
struct Throughput {
    per_second: f64,
    /// Updates node 0 executed in the window (each finalized once for the subnet).
    executed: u64,
    pools: Vec<Option<u64>>,
    costs: Vec<KindCost>,
}

/// Deploys `to` (the next release) and watches every node until the subnet runs it;
/// with `payload`, also until each node executed a block with updates on it.
fn upgrade(
    rt: &Runtime,
    net: &Testnet,
    from: &str,
    to: &str,
    payload: bool,
) -> Result<UpgradeTimes, String> {
    let client = client()?;
    let adopted = net.deploy(to)?;
    let n = net.replicas.len();
    let mut old_last: Vec<Option<u64>> = vec![None; n];
    let mut new_first: Vec<Option<u64>> = vec![None; n];
    let mut halted_at: Option<Instant> = None;
    let mut resumed_at: Option<Instant> = None;
    let mut resumed_unix_ms: Option<u64> = None;
    let mut running_at: Option<Instant> = None;
    loop {
        let mut running = 0;
        for i in 0..n {
            let r = rt
                .block_on(replica(&client, &net.replicas[i]).status())
                .ok();
            let o = rt.block_on(get_json(
                &client,
                &format!("{}/status", net.orchestrators[i]),
            ));
            let now = Instant::now();
            if let Some(r) = &r {
                let version = r.replica_version.as_str();
                if version == from {
                    if let Some(p) = &r.last_payload {
                        old_last[i] = Some(p.executed_at_ms);
                    }
                    if r.halted && halted_at.is_none() {
                        halted_at = Some(now);
                    }
                } else if version == to {
                    if new_first[i].is_none() {
                        new_first[i] = r.first_payload.as_ref().map(|p| p.executed_at_ms);
                    }
                    if resumed_at.is_none() && r.finalized_height > r.cup_height {
                        resumed_at = Some(now);
                        resumed_unix_ms = Some(replica::now_ns() / 1_000_000);
                    }
                }
            }
            if o.is_some_and(|o| o["running_version"] == to) {
                running += 1;
            }
        }
        if running == n && running_at.is_none() {
            running_at = Some(Instant::now());
        }
        let paid = !payload || new_first.iter().all(Option::is_some);
        if let (Some(r), Some(a), true) = (resumed_at, running_at, paid) {
            let downtime_ms = if payload {
                let last = old_last.iter().flatten().min().copied();
                let first = new_first.iter().flatten().min().copied();
                match (last, first) {
                    (Some(l), Some(f)) if f >= l => Some((f - l) as f64),
                    _ => {
                        return Err(format!(
                            "{from} -> {to}: no block with updates seen before the halt ({old_last:?}, {new_first:?})"
                        ));
                    }
                }
            } else {
                None
            };
            let (stages, switches) = node_stages(rt, &client, net, to, &old_last, &new_first);
            let stages = stages.filter(|_| payload);
            let handover_ms = match (switches.first_cup_written_unix_ms, resumed_unix_ms) {
                (Some(w), Some(r)) => Some(r.saturating_sub(w) as f64),
                _ => halted_at.map(|h| r.saturating_duration_since(h).as_secs_f64() * 1e3),
            };
            return Ok(UpgradeTimes {
                downtime_ms,
                deploy_to_running_ms: a.duration_since(adopted).as_secs_f64() * 1e3,
                handover_ms,
                stages,
                switches,
            });
        }
        if adopted.elapsed() > PATIENCE {
            return Err(format!(
                "{from} -> {to} did not complete within {} s (halted {}, resumed {}, running {running}/{n})",
                PATIENCE.as_secs(),
                halted_at.is_some(),
                resumed_at.is_some()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// The fastest of five TCP connects to `url`'s host and port, in milliseconds: a round
/// trip over the links between this host and that one.
fn connect_rtt_ms(url: &str) -> Result<f64, String> {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut fastest = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let c = std::net::TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
        fastest = fastest.min(t.elapsed().as_secs_f64() * 1e3);
        drop(c);
    }
    Ok(fastest)
}

/// Measures one network of `nodes` nodes; `first` also measures the handover sizes.
/// Across hosts only finality and the upgrades are measured: the link emulator is a
/// user-space process of this machine, so a throughput figure would measure it.
pub fn measure(
    s: &NetSizes,
    nodes: usize,
    first: bool,
    hosts: Hosts,
) -> Result<NetFigures, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let label = match hosts {
        Hosts::Loopback => format!("{nodes} nodes"),
        Hosts::Netns { one_way_ms } => {
            format!("{nodes} nodes across hosts ({one_way_ms} ms each way)")
        }
    };
    progress(&format!("{label}: testnet up"));
    let mut net = Testnet::start(nodes, hosts)?;
    let mut out = NetFigures {
        nodes,
        hosts: Some(hosts),
        ..NetFigures::default()
    };
    let upgrades = match hosts {
        Hosts::Loopback => s.upgrades,
        Hosts::Netns { .. } => {
            // Only the nodes' links are shaped (this host's, the operator's, is not), so a
            // connect from here pays one shaped link; two nodes pay two. (A connect at
            // loopback speed was a node that had learned the operator's address at the
            // wire's end, fixed in 87e8d06; the tiny run's test fails on one.)
            let one_way = connect_rtt_ms(&net.replicas[0])?;
            let rtt = 2.0 * one_way;
            progress(&format!(
                "{label}: a TCP connect to node 0 {one_way:.1} ms, so {rtt:.1} ms between two nodes"
            ));
            out.round_trip_ms = Some(rtt);
            s.cross_host_upgrades
        }
    };
    progress(&format!(
        "{label}: finality latency, {} s at {}/s",
        s.latency_seconds, s.latency_rate
    ));
    let (lat, failures) = latency(&rt, &net, s.latency_rate, s.latency_seconds)?;
    out.latency_ms = lat;
    out.latency_ms.sort_by(f64::total_cmp);
    out.latency_failures = failures;
    if hosts == Hosts::Loopback {
        progress(&format!(
            "{label}: throughput, {} s with {} senders",
            s.throughput_seconds, s.throughput_senders
        ));
        let t = throughput(&rt, &net, s.throughput_senders, s.throughput_seconds)?;
        out.throughput = t.per_second;
        out.pools_at_end_of_throughput = t.pools;
        out.executed_in_throughput_window = t.executed;
        out.costs_in_throughput_window = t.costs;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let background = spawn_senders(
        &rt,
        &net.replicas,
        Load {
            network: net.network,
            senders: 1,
            rate: Some(s.background_rate),
            value_bytes: 16,
            budget: None,
        },
        stop.clone(),
        Arc::default(),
    )?;
    let mut from = "1.0.0".to_string();
    let mut next = 2;
    let result = (|| {
        for k in 0..upgrades {
            let to = format!("{next}.0.0");
            let t = upgrade(&rt, &net, &from, &to, true).map_err(|e| net.kept(e))?;
            progress(&format!(
                "{label}: upgrade {}/{} {from} -> {to}: downtime {:.0} ms, deploy to every node running {:.0} ms",
                k + 1,
                upgrades,
                t.downtime_ms.unwrap_or(f64::NAN),
                t.deploy_to_running_ms
            ));
            if let Some(st) = &t.stages {
                let parts: Vec<String> = Stages::NAMES
                    .iter()
                    .zip(st.values())
                    .map(|(n, v)| format!("{n} {v:.0}"))
                    .collect();
                progress(&format!(
                    "{label}:   stages (ms, median of the nodes): {}",
                    parts.join(", ")
                ));
            }
            out.upgrades.push(t);
            from = to;
            next += 1;
        }
        Ok::<(), String>(())
    })();
    stop_senders(&rt, &stop, background);
    result?;
    if first && hosts == Hosts::Loopback {
        let mut bytes = 0u64;
        for &target in s.handover_bytes {
            progress(&format!(
                "{nodes} nodes: growing the state to {} ({} values of {} KiB)",
                size_name(target),
                target / FILL_VALUE_BYTES as u64,
                FILL_VALUE_BYTES >> 10
            ));
            let stop = Arc::new(AtomicBool::new(false));
            let accepted = Arc::new(AtomicU64::new(bytes));
            let fillers = spawn_senders(
                &rt,
                &net.replicas,
                Load {
                    network: net.network,
                    senders: 4,
                    rate: None,
                    value_bytes: FILL_VALUE_BYTES,
                    budget: Some(target),
                },
                stop.clone(),
                accepted.clone(),
            )?;
            let start = Instant::now();
            let mut shown = Instant::now();
            while accepted.load(Ordering::Relaxed) < target {
                if shown.elapsed() > Duration::from_secs(15) {
                    shown = Instant::now();
                    progress(&format!(
                        "{nodes} nodes: {} of {} accepted",
                        size_name(accepted.load(Ordering::Relaxed)),
                        size_name(target)
                    ));
                }
                if start.elapsed() > Duration::from_secs(3600) {
                    stop_senders(&rt, &stop, fillers);
                    return Err(format!(
                        "the state did not reach {target} bytes within an hour"
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            stop_senders(&rt, &stop, fillers);
            bytes = accepted.load(Ordering::Relaxed);
            drain(&rt, &net)?;
            let to = format!("{next}.0.0");
            let t = upgrade(&rt, &net, &from, &to, false).map_err(|e| net.kept(e))?;
            progress(&format!(
                "{nodes} nodes: handover at {} of state: {:.0} ms",
                size_name(bytes),
                t.handover_ms.unwrap_or(f64::NAN)
            ));
            out.handovers.push((target, t));
            from = to;
            next += 1;
        }
    }
    Ok(out)
}

/// The `p`th percentile, interpolating between neighbours (p = 50 of an even count is
/// the mean of the middle two).
pub(crate) fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let at = (p / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

pub fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// The rows of one network, each against its limit.
pub struct Limits<'a> {
    pub rtt: &'a Row,
    pub ed25519: &'a Row,
    /// Executing one update (microseconds), signatures aside.
    pub execute: &'a Row,
    /// This machine's cores: every process of a measured network shares them.
    pub cores: usize,
    pub restart_floor: &'a Row,
    /// `(state bytes, spawn + open of a state that size)`.
    pub handover_floor: &'a [(u64, Row)],
}

pub fn rows(f: &NetFigures, l: &Limits) -> Vec<Row> {
    let n = f.nodes;
    // Across hosts, the measured round trip is the floor of finality and downtime alike.
    let cross = match (f.hosts, f.round_trip_ms) {
        (Some(Hosts::Netns { one_way_ms }), Some(rtt)) => Some((
            format!(" across hosts, {} ms round trip", 2 * one_way_ms),
            Row::new(
                format!("round trip between two nodes, twice a TCP connect to one (n = {n})"),
                rtt,
                "ms",
            ),
        )),
        _ => None,
    };
    let at = cross.as_ref().map_or("", |(at, _)| at.as_str());
    // A percentile of `samples` (milliseconds), against `limit`.
    let stat = |name: &str, samples: &[f64], p: f64, limit: &Row| {
        let limit = cross.as_ref().map_or(limit, |(_, rtt)| rtt);
        Row::new(
            format!("{name}{at} (n = {n})"),
            percentile(samples, p),
            "ms",
        )
        .samples(samples.len())
        .against(limit)
    };
    let lat = &f.latency_ms;
    let mut rows: Vec<Row> = cross.iter().map(|(_, rtt)| rtt.clone()).collect();
    rows.extend([
        stat("finality latency p50", lat, 50.0, l.rtt),
        stat("finality latency p99", lat, 99.0, l.rtt),
    ]);
    if cross.is_none() {
        // The work no design can skip: every node checks every update's signature once
        // and executes it once. Consensus, messages, the load's own signing and HTTP
        // come on top, so a figure stays under this bound.
        let per_update_us = n as f64 * (1e6 / l.ed25519.value + l.execute.value);
        let bound = Row::new(
            format!(
                "throughput bound: {} cores over {n} × (one ed25519 verification + executing one update) (n = {n})",
                l.cores
            ),
            l.cores as f64 * 1e6 / per_update_us,
            "1/s",
        );
        let throughput = Row::new(
            format!("throughput, updates finalized per second (n = {n})"),
            f.throughput,
            "1/s",
        )
        .against(&bound);
        rows.extend([bound, throughput]);
    }
    let updates = f.executed_in_throughput_window.max(1) as f64;
    for c in &f.costs_in_throughput_window {
        rows.push(Row::new(
            format!(
                "CPU time per finalized update, {} processes ({} of them, n = {n})",
                c.kind, c.processes
            ),
            c.cpu_seconds / updates * 1e6,
            "µs",
        ));
    }
    for c in &f.costs_in_throughput_window {
        rows.push(Row::new(
            format!(
                "resident memory of the largest {} process under load (n = {n})",
                c.kind
            ),
            c.max_rss_bytes as f64 / (1 << 20) as f64,
            "MiB",
        ));
    }
    let downtimes: Vec<f64> = f.upgrades.iter().filter_map(|u| u.downtime_ms).collect();
    let deploys: Vec<f64> = f.upgrades.iter().map(|u| u.deploy_to_running_ms).collect();
    if !downtimes.is_empty() {
        let floor = l.restart_floor;
        rows.push(stat("upgrade downtime, median", &downtimes, 50.0, floor));
        rows.push(stat("upgrade downtime, maximum", &downtimes, 100.0, floor));
        rows.push(stat(
            "deploy adopted to every node running, median",
            &deploys,
            50.0,
            floor,
        ));
        let stages: Vec<Stages> = f.upgrades.iter().filter_map(|u| u.stages).collect();
        for (k, name) in Stages::NAMES.iter().enumerate() {
            let v: Vec<f64> = stages.iter().map(|s| s.values()[k]).collect();
            if !v.is_empty() {
                rows.push(
                    Row::new(
                        format!("downtime stage: {name}, median{at} (n = {n})"),
                        percentile(&v, 50.0),
                        "ms",
                    )
                    .samples(v.len()),
                );
            }
        }
    }
    for (bytes, t) in &f.handovers {
        if let Some((_, floor)) = l.handover_floor.iter().find(|(b, _)| b == bytes) {
            let at = format!("state handover at {}", size_name(*bytes));
            rows.push(stat(&at, &[t.handover_ms.unwrap_or(f64::NAN)], 50.0, floor));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_interpolate() {
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 100.0), 3.0);
        assert_eq!(percentile(&[0.0, 10.0], 99.0), 9.9);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
