//! `testnet chaos --upgrades N --seed S` (`scripts/chaos.sh`): N upgrades in a row on a
//! 4-node `--hosts netns` testnet under load, each with faults drawn from the seed at
//! random instants: SIGKILL of an orchestrator (started again later, as its service
//! manager would) or of a replica, a partition of the node, a clock step on it, bursts
//! of loss and latency on every link. One node at most is faulty per upgrade (f = 1).
//! After each upgrade every node must run the new release and finalize past its CUP,
//! and every orchestrator that reports a CUP at the same height must report the same
//! state hash; at the end every acknowledged write must be on every node. A failure
//! names the seed, the upgrade and the faults drawn. The counterpart, over real
//! processes, of the simulator's soak.

use super::*;
use rand::Rng;
use scenario::{orchestrators, release, wait_all};
use std::collections::BTreeMap;

/// One fault, on the upgrade's victim node where it has one.
#[derive(Clone, Debug, Serialize)]
pub(crate) enum Fault {
    KillOrchestrator {
        node: usize,
        restart_after_ms: u64,
    },
    KillReplica {
        node: usize,
    },
    Partition {
        node: usize,
        heal_after_ms: u64,
    },
    ClockStep {
        node: usize,
        offset_s: i64,
        back_after_ms: u64,
    },
    LossBurst {
        loss_pct: f64,
        for_ms: u64,
    },
    LatencyBurst {
        latency_ms: u32,
        for_ms: u64,
    },
}

/// The faults of one upgrade: one to three, at instants in its first 12 s.
pub(crate) fn draw(rng: &mut impl Rng, nodes: usize) -> Vec<(u64, Fault)> {
    let victim = rng.random_range(0..nodes);
    let count = rng.random_range(1..=3);
    let mut faults: Vec<(u64, Fault)> = (0..count)
        .map(|_| {
            let at = rng.random_range(0..12_000);
            let span = rng.random_range(2_000..10_000);
            let f = match rng.random_range(0..6) {
                0 => Fault::KillOrchestrator {
                    node: victim,
                    restart_after_ms: span,
                },
                1 => Fault::KillReplica { node: victim },
                2 => Fault::Partition {
                    node: victim,
                    heal_after_ms: span,
                },
                3 => Fault::ClockStep {
                    node: victim,
                    offset_s: if rng.random_bool(0.5) { 30 } else { -30 },
                    back_after_ms: span,
                },
                4 => Fault::LossBurst {
                    loss_pct: 10.0,
                    for_ms: span,
                },
                _ => Fault::LatencyBurst {
                    latency_ms: 150,
                    for_ms: span,
                },
            };
            (at, f)
        })
        .collect();
    faults.sort_by_key(|(at, _)| *at);
    faults
}

/// What a fault does, and when it is undone: a timed list of steps.
enum Step {
    Kill(String),
    KillReplica(usize),
    StartNode(usize, Option<String>),
    StopNode(usize),
    Partition(usize),
    Heal,
    Shape(hosts::Shape),
}

fn steps(faults: &[(u64, Fault)], base: hosts::Shape) -> Vec<(u64, Step)> {
    let mut s = Vec::new();
    for (at, f) in faults {
        match f {
            Fault::KillOrchestrator {
                node,
                restart_after_ms,
            } => {
                s.push((*at, Step::Kill(format!("node-{node}"))));
                s.push((at + restart_after_ms, Step::StartNode(*node, None)));
            }
            Fault::KillReplica { node } => s.push((*at, Step::KillReplica(*node))),
            Fault::Partition {
                node,
                heal_after_ms,
            } => {
                s.push((*at, Step::Partition(*node)));
                s.push((at + heal_after_ms, Step::Heal));
            }
            Fault::ClockStep {
                node,
                offset_s,
                back_after_ms,
            } => {
                s.push((*at, Step::StopNode(*node)));
                s.push((*at, Step::StartNode(*node, Some(format!("{offset_s:+}s")))));
                s.push((at + back_after_ms, Step::StopNode(*node)));
                s.push((at + back_after_ms, Step::StartNode(*node, None)));
            }
            Fault::LossBurst { loss_pct, for_ms } => {
                let burst = hosts::Shape {
                    loss_pct: *loss_pct,
                    ..base
                };
                s.push((*at, Step::Shape(burst)));
                s.push((at + for_ms, Step::Shape(base)));
            }
            Fault::LatencyBurst { latency_ms, for_ms } => {
                let burst = hosts::Shape {
                    latency_ms: *latency_ms,
                    jitter_ms: base.jitter_ms,
                    ..base
                };
                s.push((*at, Step::Shape(burst)));
                s.push((at + for_ms, Step::Shape(base)));
            }
        }
    }
    // Stable: a clock step's stop comes before its start.
    s.sort_by_key(|(at, _)| *at);
    s
}

pub(crate) fn chaos(upgrades: u32, seed: u64, as_json: bool) -> Result<(), String> {
    if upgrades == 0 {
        return Err("--upgrades must be at least 1".into());
    }
    let shape = hosts::Shape {
        latency_ms: 10,
        jitter_ms: 2,
        loss_pct: 0.5,
        rate_mbit: 0,
    };
    let args = PrepArgs {
        nodes: 4,
        spare: 0,
        nns_nodes: 0,
        dkg_interval: 9,
        neurons: 3,
        base_port: Some(hosts::HOST_BASE_PORT),
        webhooks: Vec::new(),
        hosts: Hosts::Netns,
        shape,
    };
    in_temp_testnet("chaos", &args, as_json, |dir| {
        run(dir, upgrades, seed, shape)
    })
    .map_err(|e| format!("seed {seed}: {e}"))
}

fn run(dir: &Path, upgrades: u32, seed: u64, base: hosts::Shape) -> Result<Value, String> {
    up(dir)?;
    let l = layout(dir)?;
    let urls = replica_urls(&l);
    let network = story::network_id(dir)?;
    let rt = story::workers()?;
    let client = client()?;
    let subnet = rt.block_on(first_subnet(&l))?;
    let load = story::Load::start(&rt, &urls, network, 20);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut report = Vec::new();
    for k in 0..upgrades {
        let version = format!("{}.0.0", k + 2);
        let faults = draw(&mut rng, l.nodes.len());
        let fail = |e: String| {
            format!(
                "upgrade {} of {upgrades} to {version} with faults {faults:?}: {e}",
                k + 1
            )
        };
        println!(
            "upgrade {} of {upgrades} to {version}: faults {faults:?}",
            k + 1
        );
        let t0 = Instant::now();
        release(dir, &subnet, &version, None, true).map_err(fail)?;
        for (at, step) in steps(&faults, base) {
            let due = t0 + Duration::from_millis(at);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            apply(dir, &rt, &client, &l, step).map_err(fail)?;
        }
        let on = wait_all(&rt, dir, &format!("every node on {version}"), |o| {
            o["running_version"] == version.as_str()
        })
        .map_err(fail)?;
        let cup = on
            .iter()
            .filter_map(|o| o["cup"]["height"].as_u64())
            .max()
            .unwrap_or(0);
        let begin = Instant::now();
        loop {
            let heights: Vec<u64> = urls
                .iter()
                .map(|u| {
                    rt.block_on(replica_status(&client, u))
                        .map_or(0, |s| s.finalized_height)
                })
                .collect();
            if heights.iter().all(|h| *h > cup + 2) {
                break;
            }
            if begin.elapsed() > story::UPGRADE_PATIENCE {
                return Err(fail(format!(
                    "not every node finalizes past the CUP at {cup}: {heights:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        // Certified states agree: CUPs at one height carry one state hash.
        let mut at_height: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for o in orchestrators(&rt, dir).map_err(fail)? {
            if let (Some(h), Some(s)) =
                (o["cup"]["height"].as_u64(), o["cup"]["state_hash"].as_str())
            {
                at_height.entry(h).or_default().push(s.to_string());
            }
        }
        for (h, hashes) in &at_height {
            if hashes.iter().any(|s| s != &hashes[0]) {
                return Err(fail(format!(
                    "nodes disagree on the state at height {h}: {hashes:?}"
                )));
            }
        }
        let ms = t0.elapsed().as_millis();
        println!(
            "upgrade {} of {upgrades}: every node on {version} past the CUP at {cup} after {ms} ms",
            k + 1
        );
        report.push(json!({"version": version, "cup_height": cup, "ms": ms, "faults": faults}));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (_, acknowledged) = load.finish(&rt)?;
    let checked = rt.block_on(story::verify(
        &urls,
        &acknowledged,
        &query::subnet_key(dir)?,
    ));
    println!(
        "{upgrades} upgrades complete; {} writes acknowledged, {} lost, {} unverified (checked on every node)",
        acknowledged.len(),
        checked.lost.len(),
        checked.unverified.len()
    );
    if !checked.lost.is_empty() || !checked.unverified.is_empty() {
        return Err(format!(
            "acknowledged writes lost or unverified: {:?} {:?}",
            checked.lost, checked.unverified
        ));
    }
    Ok(json!({
        "seed": seed,
        "upgrades": upgrades,
        "writes_acknowledged": acknowledged.len(),
        "writes_lost": checked.lost.len(),
        "runs": report,
    }))
}

fn apply(
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    l: &Layout,
    step: Step,
) -> Result<(), String> {
    match step {
        Step::Kill(name) => {
            if let Some(pid) = running(dir, &name) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Ok(())
        }
        Step::KillReplica(i) => {
            let url = format!("http://{}/status", l.nodes[i].orchestrator_address);
            if let Some(pid) = rt
                .block_on(get(client, &url))
                .and_then(|s| s["replica_pid"].as_i64())
            {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            Ok(())
        }
        Step::StopNode(i) => stop_node(dir, i).map(drop),
        Step::StartNode(i, offset) => start_node(dir, i, offset.as_deref()).map(drop),
        Step::Partition(i) => {
            let others: Vec<String> = (0..l.nodes.len())
                .filter(|j| *j != i)
                .map(|j| j.to_string())
                .collect();
            partition(dir, Some(&format!("{}/{i}", others.join(",")))).map(drop)
        }
        Step::Heal => partition(dir, None).map(drop),
        Step::Shape(s) => reshape(dir, None, s).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_seed_draws_the_same_faults_on_one_node_at_most() {
        for seed in 0..200 {
            let a = draw(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed), 4);
            let b = draw(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed), 4);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            assert!((1..=3).contains(&a.len()));
            let victims: std::collections::BTreeSet<usize> = a
                .iter()
                .filter_map(|(_, f)| match f {
                    Fault::KillOrchestrator { node, .. }
                    | Fault::KillReplica { node }
                    | Fault::Partition { node, .. }
                    | Fault::ClockStep { node, .. } => Some(*node),
                    _ => None,
                })
                .collect();
            assert!(victims.len() <= 1, "seed {seed}: {a:?}");
            // Every fault that is undone is undone within the upgrade's first 22 s.
            let last = steps(&a, hosts::Shape::default())
                .last()
                .map(|(at, _)| *at)
                .unwrap_or(0);
            assert!(last < 22_000, "seed {seed}: {last}");
        }
    }
}
