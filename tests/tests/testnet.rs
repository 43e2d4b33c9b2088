//! The `testnet` tool end to end, real processes on loopback: a 4-node network that
//! governance upgrades from the first release to the next one (state schema 2 with its
//! migration, the append method, another artifact encoding) under continuous load, while
//! one node is down, no package URL is good at first, and an orchestrator and a replica
//! are killed with SIGKILL during the halt; then a downgrade to the first release's code
//! that the state's schema does not allow, refused with the state left as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::testnet::{Net, PATIENCE, nodes, replica_status, run};

use serde_json::Value;
use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|st| !st.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

fn pid_in(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

/// On `version`, in state schema `schema`, finalizing past its CUP.
fn resumed(n: &Value, version: &str, schema: u64) -> bool {
    n["running_version"] == version
        && n["state_schema"] == schema
        && n["finalized_height"].as_u64() > n["cup_height"].as_u64().map(|c| c + 1)
}

/// What [`sample_hashes`] saw: per `(state schema, executed height)`, each node's hash.
type Seen = BTreeMap<(u64, u64), BTreeMap<String, String>>;

/// The `(schema, height)` keys at which two nodes reported different state hashes.
fn divergences(seen: &Seen) -> Vec<(u64, u64)> {
    seen.iter()
        .filter(|(_, by_node)| {
            by_node
                .values()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1
        })
        .map(|(k, _)| *k)
        .collect()
}

#[test]
fn the_divergence_check_catches_two_hashes_at_one_height_and_schema() {
    let mut seen = Seen::new();
    seen.entry((1, 5))
        .or_default()
        .insert("a".into(), "h".into());
    seen.entry((1, 5))
        .or_default()
        .insert("b".into(), "h".into());
    // The same height after a migration is another key, not a divergence.
    seen.entry((2, 5))
        .or_default()
        .insert("a".into(), "m".into());
    assert!(divergences(&seen).is_empty());
    // A planted divergence is reported.
    seen.entry((1, 6))
        .or_default()
        .insert("a".into(), "x".into());
    seen.entry((1, 6))
        .or_default()
        .insert("b".into(), "y".into());
    assert_eq!(divergences(&seen), vec![(1, 6)]);
}

/// Samples every replica's `(state schema, executed height) -> state hash` until stopped:
/// two nodes reporting different hashes for one key is a divergence.
fn sample_hashes(urls: Vec<String>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut seen = Seen::new();
        while !stop.load(Ordering::Relaxed) {
            for u in &urls {
                if let Some(s) = rt.block_on(replica_status(&http, u)) {
                    seen.entry((u64::from(s.state_schema), s.executed_height))
                        .or_default()
                        .insert(u.clone(), s.state_hash.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        seen
    })
}

/// The tests of this file each run a four-node network: one at a time on a small machine.
static ONE_NETWORK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn upgrade_to_the_next_release_under_load_through_failures_then_a_refused_downgrade() {
    let _one = ONE_NETWORK_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Net::new(&tests::binaries(), &dir);
    let d = net.d.clone();
    // Without the NNS subnet (`tests/tests/nns_*.rs` cover it): the registry server
    // decides, and the 2 cores go to the application subnet under test.
    let prep = [
        "prep",
        "--dir",
        &d,
        "--nodes",
        "4",
        "--dkg-interval",
        "9",
        "--base-port",
        "0",
        "--nns-nodes",
        "0",
    ];
    run(&net.testnet, &prep);
    // prep refuses to overwrite.
    assert!(
        !Command::new(&net.testnet)
            .args(["prep", "--dir", &d])
            .status()
            .unwrap()
            .success()
    );
    run(&net.testnet, &["up", "--dir", &d]);
    run(&net.testnet, &["up", "--dir", &d]); // safe to run twice
    let s = net.status();
    assert_eq!(nodes(&s).len(), 4);
    for n in nodes(&s) {
        assert_eq!(n["alive"], true, "{s}");
        assert_eq!(n["running_version"], "1.0.0", "{s}");
        assert_eq!(n["state_schema"], 1, "{s}");
    }
    let registry = s["registry_url"].as_str().unwrap().to_string();
    let base_url = s["package_url_base"].as_str().unwrap().to_string();
    let subnet = s["subnets"][0]["subnet_id"].as_str().unwrap().to_string();
    let urls: Vec<String> = nodes(&s)
        .iter()
        .map(|n| n["replica_url"].as_str().unwrap().to_string())
        .collect();
    let orchestrators: Vec<String> = nodes(&s)
        .iter()
        .map(|n| n["orchestrator_url"].as_str().unwrap().to_string())
        .collect();

    // Continuous load for the whole upgrade, and a watch on every node's state hashes.
    let writes = tmp.path().join("writes.jsonl");
    let load: Child = net.spawn_load(&writes);
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_hashes(urls.clone(), stop_sampling.clone());

    // Node 3 is down through the whole upgrade (three of four still make a quorum);
    // `testnet status` says so in its exit code (3), as it said all were up (0).
    assert_eq!(net.status_code(), Some(0));
    run(&net.testnet, &["stop-node", "--dir", &d, "--node", "3"]);
    assert_eq!(
        net.status_code(),
        Some(3),
        "testnet status with node 3 down"
    );

    // Governance elects the next release with two URLs: the first serves the wrong bytes
    // (the 1.0.0 package), the second nothing yet.
    let staged = tmp.path().join("2.0.0.tar.zst");
    let sha = net.package("2.0.0", &staged, true);
    let first_sha = net.package("1.0.0", &tmp.path().join("again.tar.zst"), false);
    assert_ne!(sha, first_sha, "the next release's package must differ");
    let bad_url = format!("{base_url}/1.0.0.tar.zst");
    let url = format!("{base_url}/2.0.0.tar.zst");
    net.govern(
        &registry,
        &[
            "propose",
            "elect-version",
            "--version",
            "2.0.0",
            "--sha256",
            &sha,
            "--url",
            &bad_url,
            "--url",
            &url,
        ],
    );
    net.deploy(&registry, &subnet, "2.0.0");

    // No good URL: no node is ready for 2.0.0, so the subnet does not halt; every
    // running node stays on 1.0.0 and reports why.
    let failed = net.wait("every running node reports the failed download", |s| {
        nodes(s)[0..3].iter().all(|n| {
            n["running_version"] == "1.0.0"
                && n["upgrade_state"] == "failed"
                && n["upgrade_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("1.0.0.tar.zst") && e.contains("2.0.0.tar.zst"))
        })
    });
    // Readiness gates the halt: the subnet runs on past the next summaries (DKG
    // interval 9) without halting.
    let first = net.replica_status(&urls[0]).unwrap();
    let start = Instant::now();
    loop {
        let now = net.replica_status(&urls[0]).unwrap();
        assert!(!now.halting, "{now:?} {failed}");
        if now.finalized_height > first.finalized_height + 20 {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{now:?} {failed}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Still on 1.0.0 and still reporting why.
    net.wait(
        "every running node still reports the failed download",
        |s| {
            nodes(s)[0..3]
                .iter()
                .all(|n| n["running_version"] == "1.0.0" && n["upgrade_state"] == "failed")
        },
    );

    // While the subnet waits for its nodes to be ready: SIGKILL node 1's orchestrator
    // and node 2's replica. Node 1's
    // orchestrator is started again (as its service manager would); it must stop the
    // replica its predecessor left running rather than start a second one.
    let orchestrator_1 = pid_in(&dir.join("pids/node-1.pid"));
    let orphan = pid_in(&dir.join("nodes/node-1/replica.pid"));
    let replica_2 = pid_in(&dir.join("nodes/node-2/replica.pid"));
    signal(orchestrator_1, "-KILL");
    signal(replica_2, "-KILL");
    let start = Instant::now();
    while alive(orchestrator_1) || alive(replica_2) {
        assert!(start.elapsed() < PATIENCE, "SIGKILL did not take");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        alive(orphan),
        "node 1's replica should outlive its orchestrator"
    );
    run(&net.testnet, &["start-node", "--dir", &d, "--node", "1"]);

    // The good package appears at the second URL: the retried downloads find it.
    std::fs::rename(&staged, dir.join("packages/2.0.0.tar.zst")).unwrap();
    let switched = net.wait("nodes 0 to 2 on 2.0.0 in schema 2", |s| {
        nodes(s)[0..3].iter().all(|n| resumed(n, "2.0.0", 2))
    });
    assert!(!alive(orphan), "node 1's orphaned replica still runs");
    let cup = nodes(&switched)[0]["cup_height"].as_u64().unwrap();
    assert!(cup > 0, "{switched}");

    // Node 3 comes back on 1.0.0: it learns the CUP from its peers, fetches 2.0.0,
    // re-executes into it and joins (its state at the CUP by state sync, then migrated).
    run(&net.testnet, &["start-node", "--dir", &d, "--node", "3"]);
    net.wait("node 3 on 2.0.0 in schema 2", |s| {
        resumed(&nodes(s)[3], "2.0.0", 2)
    });

    // The load ends; every acknowledged write is on every node, in schema 2's form.
    std::thread::sleep(Duration::from_secs(2));
    let report = net.end_load_and_verify(load, &writes, cup);
    assert_eq!(report["unmigrated"], serde_json::json!([]), "{report}");
    assert_eq!(report["state_schemas"], serde_json::json!([2, 2, 2, 2]));

    // No two nodes ever reported different state hashes at one height and schema.
    stop_sampling.store(true, Ordering::Relaxed);
    let seen = sampler.join().unwrap();
    let diverged = divergences(&seen);
    assert!(
        diverged.is_empty(),
        "nodes disagree at (schema, height) {diverged:?}: {:?}",
        diverged.iter().map(|k| &seen[k]).collect::<Vec<_>>()
    );
    assert!(
        seen.keys().any(|(s, _)| *s == 1) && seen.keys().any(|(s, _)| *s == 2),
        "the sampler saw both schemas"
    );

    // A downgrade to the first release's code as 3.0.0: its preflight finds state
    // schema 2, which it cannot read, so every node refuses (status and log), no node is
    // ready, and the subnet runs on 2.0.0 without halting.
    let sha3 = net.package("3.0.0", &dir.join("packages/3.0.0.tar.zst"), false);
    assert_eq!(sha3.len(), 64);
    let url3 = format!("{base_url}/3.0.0.tar.zst");
    net.govern(
        &registry,
        &[
            "propose",
            "elect-version",
            "--version",
            "3.0.0",
            "--sha256",
            &sha3,
            "--url",
            &url3,
        ],
    );
    net.deploy(&registry, &subnet, "3.0.0");
    let refused = net.wait("every node refuses 3.0.0", |s| {
        nodes(s).iter().all(|n| {
            n["running_version"] == "2.0.0"
                && n["upgrade_state"] == "failed"
                && n["upgrade_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("refused 3.0.0") && e.contains("schema 2"))
                && n["upgrade_preflight"]["ok"] == false
        })
    });
    let replica_status = |i: usize| {
        net.replica_status(&urls[i]).unwrap_or_else(|| {
            let log = dir.join(format!("nodes/node-{i}/replica.log"));
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!("node {i}'s replica does not answer; {refused}\n{tail:#?}")
        })
    };
    let before: Vec<_> = (0..urls.len()).map(replica_status).collect();
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..urls.len() {
        let now = replica_status(i);
        assert_eq!(now.replica_version.as_str(), "2.0.0", "{now:?}");
        assert_eq!(now.state_schema, 2, "{now:?}");
        assert!(!now.halting, "{now:?}");
        assert!(
            now.finalized_height > before[i].finalized_height,
            "node {i} stopped: {now:?} {:?}",
            before[i]
        );
        let o = net.get(format!("{}/status", orchestrators[i])).unwrap();
        assert_eq!(o["upgrade"]["target_version"], "3.0.0", "{o}");
        let log = std::fs::read_to_string(dir.join(format!("logs/node-{i}.log"))).unwrap();
        assert!(
            log.contains("refused the upgrade in preflight"),
            "node {i}'s log"
        );
    }
    let w = writes.to_str().unwrap();
    let again: Value = serde_json::from_str(&run(
        &net.testnet,
        &["verify", "--dir", &d, "--writes", w, "--json"],
    ))
    .unwrap();
    assert_eq!(again["lost"], serde_json::json!([]), "{again}");
    assert_eq!(again["unmigrated"], serde_json::json!([]), "{again}");

    run(&net.testnet, &["down", "--dir", &d]);
    let s = net.status();
    for n in nodes(&s) {
        assert_eq!(n["alive"], false, "{s}");
    }
}

/// The most resident memory an honest orchestrator may use while a peer streams an
/// endless CUP answer at it (an orchestrator idles at a few tens of MiB; reading such an
/// answer whole took one past 1,200 MiB within 45 s).
const MAX_ORCHESTRATOR_RSS_MIB: u64 = 256;
/// How long the Byzantine peer streams.
const BYZANTINE_WINDOW: Duration = Duration::from_secs(45);

/// Resident memory of a process in MiB, from /proc.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// A CUP endpoint that answers every request with 200 and zeros without end; counts the
/// requests and the bytes it managed to send.
fn endless_cup_endpoint(
    addr: String,
    stop: Arc<AtomicBool>,
) -> (
    std::thread::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicU64>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::AtomicU64;
    let requests = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (r, b) = (requests.clone(), sent.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/_/catch_up_package",
                axum::routing::post(move || {
                    r.fetch_add(1, Ordering::Relaxed);
                    let b = b.clone();
                    async move {
                        let chunk = axum::body::Bytes::from(vec![0u8; 64 * 1024]);
                        let stream = futures_util::stream::repeat_with(move || {
                            b.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            Ok::<_, std::io::Error>(chunk.clone())
                        });
                        axum::body::Body::from_stream(stream)
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
            let serve = axum::serve(listener, app);
            let until_stopped = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = until_stopped => {}
            }
        });
    });
    (thread, requests, sent)
}

/// Issue 14: one member whose CUP endpoint streams an endless body. The other
/// orchestrators refuse each answer at a CUP's size, so their memory stays under a fixed
/// bound, and the subnet (three of four) keeps acknowledging writes.
#[test]
fn an_endless_cup_answer_leaves_the_others_memory_bounded_while_writes_go_on() {
    let _one = ONE_NETWORK_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Net::new(&tests::binaries(), &dir);
    let d = net.d.clone();
    run(
        &net.testnet,
        &[
            "prep",
            "--dir",
            &d,
            "--nodes",
            "4",
            "--dkg-interval",
            "9",
            "--base-port",
            "0",
            "--nns-nodes",
            "0",
        ],
    );
    run(&net.testnet, &["up", "--dir", &d]);
    let s = net.status();
    let byzantine = nodes(&s)[3]["orchestrator_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let writes = tmp.path().join("writes.jsonl");
    let mut load: Child = Command::new(&net.testnet)
        .args(["load", "--dir", &d, "--rate", "20", "--duration", "300"])
        .arg("--out")
        .arg(&writes)
        .spawn()
        .unwrap();

    // Node 3's orchestrator (and replica) are replaced by the Byzantine endpoint.
    run(&net.testnet, &["stop-node", "--dir", &d, "--node", "3"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (server, requests, sent) = endless_cup_endpoint(byzantine, stop.clone());
    let honest: Vec<u32> = (0..3)
        .map(|i| pid_in(&dir.join(format!("pids/node-{i}.pid"))))
        .collect();

    let replica = nodes(&s)[0]["replica_url"].as_str().unwrap().to_string();
    let height = || {
        net.replica_status(&replica)
            .map_or(0, |r| r.certified_height)
    };
    let start = Instant::now();
    let window_from = height();
    let mut peak = 0;
    while start.elapsed() < BYZANTINE_WINDOW {
        for pid in &honest {
            let rss = rss_mib(*pid).unwrap_or_else(|| panic!("orchestrator {pid} is gone"));
            peak = peak.max(rss);
            assert!(
                rss < MAX_ORCHESTRATOR_RSS_MIB,
                "orchestrator {pid} holds {rss} MiB after {:?} ({} requests, {} MiB sent)",
                start.elapsed(),
                requests.load(Ordering::Relaxed),
                sent.load(Ordering::Relaxed) >> 20
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let window_to = height();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    // `load` writes its file when it ends.
    signal(load.id(), "-INT");
    assert!(load.wait().unwrap().success(), "testnet load failed");
    let in_window = std::fs::read_to_string(&writes)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["height"].as_u64())
        .filter(|h| (window_from..=window_to).contains(h))
        .count();
    let asked = requests.load(Ordering::Relaxed);
    println!(
        "peak orchestrator RSS {peak} MiB; the Byzantine endpoint was asked {asked} times and \
         sent {} MiB; writes acknowledged at heights {window_from}..={window_to}: {in_window}",
        sent.load(Ordering::Relaxed) >> 20,
    );
    // Not vacuous: the honest orchestrators did ask the endless endpoint.
    assert!(asked >= 3, "the Byzantine endpoint was asked {asked} times");
    // 20 writes a second for 45 s were sent; most must have been acknowledged.
    assert!(
        in_window >= 200,
        "the subnet took only {in_window} writes at heights {window_from}..={window_to}"
    );
}
