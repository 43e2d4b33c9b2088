//! `testnet demo --scenario recovery`: an upgrade that cannot strand the subnet, and a
//! way out when one does. Under a steady load: a release whose rehearsal fails passes
//! preflight on no node and the subnet never halts; a release that passes preflight and
//! crashes at start strands it; `nns propose recover-subnet` with the stalled CUP's
//! height and state hash brings it back on a good release; every acknowledged write is
//! checked on every node.

use super::*;
use replica::cli::Drill;

/// Proposes as neuron 0 and adopts with neuron 1's vote (two of three), through the NNS
/// subnet's nodes (or the registry server without one); the proposal id.
pub(crate) fn govern(dir: &Path, args: &[&str]) -> Result<String, String> {
    let l = layout(dir)?;
    let key = |i: usize| dir.join("neurons").join(format!("neuron-{i}.key"));
    let out = nns(&l, &key(0), args)?;
    let id = out.trim().trim_start_matches("proposal ").to_string();
    nns(&l, &key(1), &["vote", "--proposal", &id, "--yes"])?;
    Ok(id)
}

/// Packages the next release as `version` (broken as `drill` says), elects it at the
/// package server and deploys it to `subnet`.
pub(crate) fn release(
    dir: &Path,
    subnet: &str,
    version: &str,
    drill: Option<Drill>,
    deploy: bool,
) -> Result<(), String> {
    let l = layout(dir)?;
    let file = format!("{version}.tar.zst");
    let sha = package(version, &dir.join("packages").join(&file), true, drill)?;
    let url = format!("{}/{file}", l.package_url_base());
    let elect = [
        "propose",
        "elect-version",
        "--version",
        version,
        "--sha256",
        &sha,
        "--url",
        &url,
    ];
    govern(dir, &elect)?;
    if deploy {
        let args = ["propose", "deploy-version", "--subnet", subnet];
        govern(dir, &[&args[..], &["--version", version]].concat())?;
    }
    Ok(())
}

/// Every node's orchestrator `/status` (null where one does not answer).
pub(crate) fn orchestrators(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
) -> Result<Vec<Value>, String> {
    let l = layout(dir)?;
    let client = client()?;
    Ok(l.nodes
        .iter()
        .map(|n| {
            rt.block_on(get(
                &client,
                &format!("http://{}/status", n.orchestrator_address),
            ))
            .unwrap_or(Value::Null)
        })
        .collect())
}

/// Waits until `done` holds for every node's orchestrator status.
pub(crate) fn wait_all(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>, String> {
    let start = Instant::now();
    loop {
        let all = orchestrators(rt, dir)?;
        if all.iter().all(&done) {
            return Ok(all);
        }
        if start.elapsed() > story::UPGRADE_PATIENCE {
            return Err(format!(
                "{what}: not within {:?}: {all:?}",
                story::UPGRADE_PATIENCE
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub(crate) fn recovery_in(dir: &Path) -> Result<Value, String> {
    let t0 = Instant::now();
    let mut timeline: Vec<(u128, String)> = Vec::new();
    let mut event = |what: String| {
        let ms = t0.elapsed().as_millis();
        println!("[{ms:>7} ms] {what}");
        timeline.push((ms, what));
    };
    up(dir)?;
    event("testnet up: 4 nodes finalizing on 1.0.0".into());
    let l = layout(dir)?;
    let urls = replica_urls(&l);
    let network = story::network_id(dir)?;
    // The load runs beside this thread's polling: a runtime with workers of its own.
    let rt = story::workers()?;
    let client = client()?;
    let subnet = rt.block_on(first_subnet(&l))?;
    let load = story::Load::start(&rt, &urls, network, 20);
    event("load: 20 signed writes per second".into());
    let finalized = |i: usize| {
        rt.block_on(replica_status(&client, &urls[i]))
            .map_or(0, |s| s.finalized_height)
    };

    // 1. A release whose rehearsal fails: no node is ready, the subnet runs on.
    release(dir, &subnet, "2.0.0", Some(Drill::FailsCheck), true)?;
    event("2.0.0 (built to fail its rehearsal) elected and deployed".into());
    let all = wait_all(&rt, dir, "every node refuses 2.0.0 in preflight", |o| {
        o["upgrade"]["target_version"] == "2.0.0" && o["upgrade"]["preflight"]["ok"] == false
    })?;
    let reason = all[0]["upgrade"]["preflight"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    event(format!("every node's preflight of 2.0.0 failed: {reason}"));
    let from = finalized(0);
    let start = Instant::now();
    while finalized(0) < from + 25 {
        if start.elapsed() > story::UPGRADE_PATIENCE {
            return Err(format!(
                "the subnet stopped at {} after 2.0.0",
                finalized(0)
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    event(format!(
        "no node ready, no halt: the subnet finalized {from} -> {} on 1.0.0, past two summaries",
        finalized(0)
    ));

    // 2. A release that passes preflight and crashes at start: the subnet is stranded.
    release(dir, &subnet, "3.0.0", Some(Drill::CrashAtStart), true)?;
    event("3.0.0 (built to crash at start) elected and deployed".into());
    wait_all(&rt, dir, "every node ready for 3.0.0", |o| {
        o["upgrade"]["target_version"] == "3.0.0" && o["upgrade"]["preflight"]["ok"] == true
            || o["running_version"] == "3.0.0"
    })?;
    event("every node's preflight of 3.0.0 passed: the subnet halts for it".into());
    let stranded = wait_all(&rt, dir, "every node stranded on 3.0.0", |o| {
        o["running_version"] == "3.0.0"
            && o["upgrade"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("exit status"))
    })?;
    let height = stranded[0]["cup"]["height"].as_u64().unwrap_or(0);
    let state_hash = stranded[0]["cup"]["state_hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    event(format!(
        "stranded: every node switched to 3.0.0 and its replica keeps exiting (CUP at height {height}, state hash {}...)",
        &state_hash[..state_hash.len().min(16)]
    ));

    // 3. Governance: a good release and a recovery CUP at the stalled height.
    release(dir, &subnet, "4.0.0", None, false)?;
    let h = height.to_string();
    let recover = [
        "propose",
        "recover-subnet",
        "--subnet",
        &subnet,
        "--version",
        "4.0.0",
        "--height",
        &h,
        "--state-hash",
        &state_hash,
    ];
    let p = govern(dir, &recover)?;
    let adopted = Instant::now();
    event(format!(
        "proposal {p} (recover-subnet onto 4.0.0 at height {height}) adopted"
    ));
    wait_all(&rt, dir, "every node on 4.0.0", |o| {
        o["running_version"] == "4.0.0"
    })?;
    let start = Instant::now();
    while (0..urls.len()).any(|i| finalized(i) < height + 5) {
        if start.elapsed() > story::UPGRADE_PATIENCE {
            return Err("the subnet did not resume after the recovery".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let recovered_ms = adopted.elapsed().as_millis();
    event(format!(
        "recovered: every node finalizes on 4.0.0, {recovered_ms} ms after the adoption"
    ));

    std::thread::sleep(Duration::from_secs(3));
    let (accepted, acknowledged) = load.finish(&rt)?;
    let checked = rt.block_on(story::verify(
        &urls,
        &acknowledged,
        &query::subnet_key(dir)?,
    ));
    event(format!(
        "{accepted} writes accepted, {} acknowledged, {} lost (checked on every node)",
        acknowledged.len(),
        checked.lost.len()
    ));
    if !checked.lost.is_empty() || !checked.unverified.is_empty() {
        return Err(format!(
            "acknowledged writes lost or unverified: {:?} {:?}",
            checked.lost, checked.unverified
        ));
    }
    Ok(json!({
        "scenario": "recovery",
        "stranded_cup_height": height,
        "recovered_ms_after_adoption": recovered_ms,
        "writes_acknowledged": acknowledged.len(),
        "writes_lost": checked.lost.len(),
        "timeline": timeline.iter().map(|(ms, w)| json!({"ms": ms, "event": w})).collect::<Vec<_>>(),
    }))
}
