//! The dashboard in a real browser: on a 4-node testnet (`testnet up` starts the
//! dashboard), headless Chromium driven by playwright-core (`tests/browser/dashboard.mjs`)
//! loads the page once and, without reloading it, sees every node's running version go
//! from 1.0.0 to 2.0.0 while governance upgrades the subnet, the rollout's timeline reach
//! every node healthy, and a node stopped with `testnet stop-node` shown unreachable. It
//! keeps a screenshot (`$DASHBOARD_SCREENSHOT`, else `<target dir>/artifacts/dashboard.png`;
//! the test prints the path).
//!
//! Needs `node`, Debian's `chromium` and playwright-core under `$ICUP_BROWSER_DIR` (default
//! `~/.cache/icup/browser`); `scripts/install-deps.sh` installs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};
use tests::testnet::{Net, nodes};

/// How long the script may take for one phase, and the test to hear of it (a guard
/// against hangs, not a speed assertion).
const PHASE_TIMEOUT: Duration = Duration::from_secs(240);

/// The browser script, killed if the test ends early (Chromium exits with it: its pipe
/// to playwright closes).
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn browser_dir() -> PathBuf {
    std::env::var_os("ICUP_BROWSER_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/icup/browser")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache/icup/browser"))
}

#[test]
fn the_page_follows_an_upgrade_and_a_node_going_down_without_a_reload() {
    let playwright = browser_dir().join("node_modules/playwright-core");
    let chromium = std::env::var("ICUP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    for (what, path) in [
        ("playwright-core", &playwright),
        ("chromium", &PathBuf::from(&chromium)),
    ] {
        assert!(
            path.exists(),
            "{what} is not at {}: run scripts/install-deps.sh",
            path.display()
        );
    }
    let bin = tests::binaries();
    let screenshot = std::env::var_os("DASHBOARD_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin.parent().unwrap().join("artifacts/dashboard.png"));
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::new(&bin, &tmp.path().join("net"));
    net.prep_up(4);
    let s = net.status();
    let dashboard = s["dashboard_url"].as_str().unwrap().to_string();
    let registry = s["registry_url"].as_str().unwrap().to_string();
    let base_url = s["package_url_base"].as_str().unwrap().to_string();
    let subnet = s["subnets"][0]["subnet_id"].as_str().unwrap().to_string();
    let stopped = nodes(&s)[3]["node_id"].as_str().unwrap().to_string();
    // The dashboard answers before the browser starts.
    let overview = net.get(format!("{dashboard}/api/v1/overview"));
    assert!(overview.is_some(), "no overview at {dashboard}");

    let path = tests::workspace_root().join("tests/browser/dashboard.mjs");
    let mut script = Script(
        Command::new("node")
            .arg(&path)
            .env("DASHBOARD_URL", &dashboard)
            .env("SCREENSHOT", &screenshot)
            .env("PLAYWRIGHT_CORE", &playwright)
            .env("CHROMIUM", &chromium)
            .env("NODES", "4")
            .env("OLD", "1.0.0")
            .env("NEW", "2.0.0")
            .env("STOPPED_NODE", &stopped)
            .env("PHASE_TIMEOUT_MS", PHASE_TIMEOUT.as_millis().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node (scripts/install-deps.sh installs it)"),
    );
    let (tx, lines) = mpsc::channel();
    let out = script.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("dashboard.mjs: {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut expect = |prefix: &str| -> String {
        loop {
            match lines.recv_timeout(PHASE_TIMEOUT + Duration::from_secs(30)) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(e) => {
                    let status = script.0.wait();
                    panic!(
                        "the browser script ended before {prefix:?} ({e}; exit {status:?}); its stderr says why"
                    );
                }
            }
        }
    };

    expect("phase old-version-shown");
    let staged = net.dir.join("packages/2.0.0.tar.zst");
    let sha = net.package("2.0.0", &staged, true);
    net.elect(
        &registry,
        "2.0.0",
        &sha,
        &[&format!("{base_url}/2.0.0.tar.zst")],
    );
    net.deploy(&registry, &subnet, "2.0.0");
    expect("phase new-version-shown");
    expect("phase rollout-complete");
    net.run(&["stop-node", "--dir", &net.d, "--node", "3"]);
    expect("phase unreachable-shown");
    let shot = expect("screenshot ");
    let status = script.0.wait().unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    eprintln!(
        "dashboard screenshot: {}",
        shot.trim_start_matches("screenshot ")
    );
    assert!(screenshot.exists());
    // The dashboard's own /metrics follow Prometheus's conventions like every process's.
    let metrics = net
        .rt
        .block_on(async {
            net.http
                .get(format!("{dashboard}/metrics"))
                .send()
                .await?
                .text()
                .await
        })
        .unwrap();
    if let Err(e) = tests::promtool_check(&metrics) {
        panic!("{dashboard}/metrics: {e}\n{metrics}");
    }
}
