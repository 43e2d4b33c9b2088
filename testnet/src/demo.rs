//! `testnet demo`: the whole upgrade story in one command, with its timeline.

use super::*;

/// What `testnet demo` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    Upgrade,
    Recovery,
}

pub(crate) fn demo(
    as_json: bool,
    scenario: Scenario,
    hosts: Hosts,
    shape: hosts::Shape,
) -> Result<(), String> {
    let nodes = 4;
    // The NNS subnet beside the application subnet, as `prep` makes by default.
    let nns_nodes = 4;
    let args = PrepArgs {
        nodes,
        spare: 0,
        nns_nodes,
        dkg_interval: 9,
        neurons: 3,
        base_port: Some(match hosts {
            Hosts::Loopback => free_base(nodes + nns_nodes)?,
            Hosts::Netns => hosts::HOST_BASE_PORT,
        }),
        webhooks: Vec::new(),
        hosts,
        shape,
    };
    in_temp_testnet("demo", &args, as_json, |dir| match scenario {
        Scenario::Upgrade => demo_in(dir),
        Scenario::Recovery => scenario::recovery_in(dir),
    })
}

/// Runs `story` on a new testnet in a temporary directory (`testnet-NAME-<pid>`): prep,
/// the story, down. The directory is removed after a success and kept, and named, after
/// a failure. With `as_json` the story's summary is the last line printed.
pub(crate) fn in_temp_testnet(
    name: &str,
    args: &PrepArgs,
    as_json: bool,
    story: impl FnOnce(&Path) -> Result<Value, String>,
) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("testnet-{name}-{}", std::process::id()));
    prep(&dir, args)?;
    let result = story(&dir);
    if let Err(e) = down(&dir) {
        eprintln!("testnet {name}: down: {e}");
    }
    match result {
        Ok(summary) => {
            let _ = std::fs::remove_dir_all(&dir);
            if as_json {
                println!("{summary}");
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("testnet {name}: kept {} for inspection", dir.display());
            Err(e)
        }
    }
}

pub(crate) fn demo_in(dir: &Path) -> Result<Value, String> {
    let t0 = Instant::now();
    let mut timeline: Vec<(u128, String)> = Vec::new();
    let mut event = |what: String| {
        let ms = t0.elapsed().as_millis();
        println!("[{:>7} ms] {what}", ms);
        timeline.push((ms, what));
    };
    up(dir)?;
    let l = layout(dir)?;
    // Where governance goes and who decides: the NNS subnet, when there is one.
    let by = if l.nns.is_empty() {
        "by the registry"
    } else {
        "by the NNS subnet (sent to its nodes, executed in its blocks, certified with its key)"
    };
    event(match l.nns.len() {
        0 => format!("testnet up: {} nodes finalizing on 1.0.0", l.nodes.len()),
        k => format!(
            "testnet up: an application subnet of {} nodes and an NNS subnet of {k} (its replicated state is the registry and governance; every node's orchestrator replicates the registry from it, each page checked with its key), finalizing on 1.0.0",
            l.nodes.len()
        ),
    });
    let urls = replica_urls(&l);
    let network = story::network_id(dir)?;
    let rt = story::workers()?;
    let load = story::Load::start(&rt, &urls, network, 20);
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
    let sha = package("2.0.0", &pkg, true, None)?;
    event(format!(
        "packaged 2.0.0, the next release: state schema 2 (values get checksums), the append method, artifacts on icup-consensus/2 (sha256 {})",
        &sha[..16]
    ));
    let url = format!("{}/2.0.0.tar.zst", l.package_url_base());
    let elect = [
        "propose",
        "elect-version",
        "--version",
        "2.0.0",
        "--sha256",
        &sha,
        "--url",
        &url,
    ];
    let p = scenario::govern(dir, &elect)?;
    event(format!("proposal {p} (elect 2.0.0) adopted {by}"));
    let subnet = rt.block_on(first_subnet(&l))?;
    let deploy = [
        "propose",
        "deploy-version",
        "--subnet",
        &subnet,
        "--version",
        "2.0.0",
    ];
    let p = scenario::govern(dir, &deploy)?;
    event(format!(
        "proposal {p} (deploy 2.0.0 to the application subnet) adopted {by}"
    ));
    let deployed_at = Instant::now();

    // Watch: halting, the CUP, each node's switch and migration, the first block on 2.0.0.
    let mut halting_at: Option<Instant> = None;
    let mut ready = vec![false; l.nodes.len()];
    let mut switched = vec![false; l.nodes.len()];
    let mut migrated = vec![false; l.nodes.len()];
    // Each node's last block with updates on 1.0.0 and first on 2.0.0 (wall clock, ms).
    let mut old_last: Vec<Option<u64>> = vec![None; l.nodes.len()];
    let mut new_first: Vec<Option<u64>> = vec![None; l.nodes.len()];
    let mut all_running_at: Option<Instant> = None;
    let start = Instant::now();
    let mut resumed_at: Option<Instant> = None;
    let resumed_at = loop {
        let mut all_resumed = true;
        for (i, n) in l.nodes.iter().enumerate() {
            let r = rt.block_on(replica_status(
                &client,
                &format!("http://{}", n.http_address),
            ));
            let o = rt.block_on(get(
                &client,
                &format!("http://{}/status", n.orchestrator_address),
            ));
            let on_b = r
                .as_ref()
                .is_some_and(|r| r.replica_version.as_str() == "2.0.0");
            if let Some(r) = &r {
                if on_b {
                    new_first[i] = new_first[i].or(r.first_payload.map(|p| p.executed_at_ms));
                } else if let Some(p) = r.last_payload {
                    old_last[i] = Some(p.executed_at_ms);
                }
            }
            let preflight = o.as_ref().map(|o| o["upgrade"]["preflight"].clone());
            if !ready[i]
                && let Some(p) = preflight.filter(|p| p["ok"] == true)
            {
                ready[i] = true;
                event(format!(
                    "node {i}: ready for 2.0.0 (preflight passed: migration of a checkpoint copy, schema {} to {}, {} ms)",
                    p["schema_from"], p["schema_to"], p["migration_ms"]
                ));
            }
            if halting_at.is_none() && r.as_ref().is_some_and(|r| r.halting || r.halted) {
                halting_at = Some(Instant::now());
                event(format!(
                    "node {i}: halting, a summary carried n - f ready words (updates now get \"subnet is upgrading\")"
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
            if on_b && !migrated[i] && r.as_ref().is_some_and(|r| r.state_schema == 2) {
                migrated[i] = true;
                event(format!(
                    "node {i}: replica 2.0.0 up, state migrated to schema 2"
                ));
            }
            let resumed = on_b
                && r.as_ref()
                    .is_some_and(|r| r.finalized_height > r.cup_height + 1);
            all_resumed &= resumed;
        }
        if all_resumed && resumed_at.is_none() {
            resumed_at = Some(Instant::now());
            event("every node finalizes on 2.0.0".into());
        }
        // The load's next update makes the first block with updates on 2.0.0.
        if let Some(at) = resumed_at
            && (new_first.iter().any(Option::is_some) || at.elapsed() > Duration::from_secs(10))
        {
            break at;
        }
        if start.elapsed() > story::UPGRADE_PATIENCE {
            return Err(format!(
                "the upgrade did not complete within {} s",
                story::UPGRADE_PATIENCE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // As the bench measures it: the last block with updates the old release executed to
    // the first the new one executed (the earliest node's clock for each). The halt is
    // now too short for the 100 ms polls above to see every time, so the time from the
    // first halting node seen to every node finalizing is kept beside it, when seen.
    let halt_to_all_finalizing_ms = halting_at.map(|h| resumed_at.duration_since(h).as_millis());
    let last = old_last.iter().flatten().min().copied();
    let first = new_first.iter().flatten().min().copied();
    let downtime_ms = match (last, first) {
        (Some(l), Some(f)) if f >= l => u128::from(f - l),
        _ => halt_to_all_finalizing_ms.unwrap_or(0),
    };
    // Each node's handover, stage by stage, as its orchestrator timed it.
    let mut switches = Vec::new();
    for (i, n) in l.nodes.iter().enumerate() {
        let o = rt.block_on(get(
            &client,
            &format!("http://{}/status", n.orchestrator_address),
        ));
        let t: Option<orchestrator::handover::SwitchTimes> =
            o.and_then(|o| serde_json::from_value(o["upgrade"]["last_switch"].clone()).ok());
        if let Some(t) = t {
            event(format!("node {i}: handover {}", handover_line(&t)));
            switches.push(t);
        }
    }
    // The new method, after: 2.0.0 appends to the value 1.0.0 wrote.
    rt.block_on(story::submit(&client, &urls[1], &append(3)))?;
    let want = "written by 1.0.0, appended by 2.0.0";
    let start = Instant::now();
    loop {
        let answers: Vec<Option<Option<String>>> = urls
            .iter()
            .map(|u| {
                rt.block_on(replica(&client, u).query("demo"))
                    .ok()
                    .map(|a| a.value)
            })
            .collect();
        if answers
            .iter()
            .all(|a| a.as_ref().is_some_and(|v| v.as_deref() == Some(want)))
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
    let (accepted, acknowledged) = load.finish(&rt)?;
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
        "downtime: {downtime_ms} ms (from the last block with updates on 1.0.0 to the first on 2.0.0)"
    );
    let summary = json!({
        "downtime_ms": downtime_ms,
        "halt_to_all_finalizing_ms": halt_to_all_finalizing_ms,
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
        "switches": switches,
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

/// One node's handover stages in a line, in the order they happened: each step's
/// milliseconds after the previous (the old replica's stop overlaps with the new
/// orchestrator's start).
fn handover_line(t: &orchestrator::handover::SwitchTimes) -> String {
    let noticed = format!("CUP noticed (by {})", t.noticed_by);
    let started = if t.rehearsed {
        "rehearsed, new orchestrator started"
    } else {
        "new orchestrator started"
    };
    let mut steps: Vec<(u64, &str)> = [
        (Some(t.cup_noticed_unix_ms), noticed.as_str()),
        (t.new_started_unix_ms, started),
        (t.old_stopped_unix_ms, "old replica stopped"),
        (t.replica_started_unix_ms, "new replica started"),
    ]
    .into_iter()
    .filter_map(|(at, name)| Some((at?, name)))
    .collect();
    // Stable: steps at the same millisecond keep the order they are listed in.
    steps.sort_by_key(|(at, _)| *at);
    let mut out = Vec::new();
    let mut prev = t.cup_written_unix_ms;
    for (at, name) in steps {
        if let Some(p) = prev {
            out.push(format!("{name} +{} ms", at.saturating_sub(p)));
        }
        prev = Some(at);
    }
    format!(
        "at height {}: CUP written, {}",
        t.cup_height,
        out.join(", ")
    )
}
