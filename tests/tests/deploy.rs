//! What operators deploy with (issue 16): the systemd unit passes `systemd-analyze
//! verify` without a warning, and the unit, the container definition and DEPLOY.md start
//! the same command on the same node directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const NODE_DIR: &str = "/var/lib/icup/node";

fn read(path: &str) -> String {
    std::fs::read_to_string(tests::workspace_root().join(path)).unwrap()
}

/// The unit's `ExecStart=` command line.
fn exec_start(unit: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart")
        .to_string()
}

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let unit = read("deploy/icup-orchestrator.service");
    // systemd-analyze checks that ExecStart's program exists: the unit, verbatim but
    // for its node directory, pointed at a node directory holding a built orchestrator.
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    let bin = node.join("images/current/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(
        tests::binaries().join("orchestrator"),
        bin.join("orchestrator"),
    )
    .unwrap();
    let here = unit.replace(NODE_DIR, node.to_str().unwrap());
    let path = tmp.path().join("icup-orchestrator.service");
    std::fs::write(&path, here).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (the systemd package; scripts/install-deps.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys and bad values are only warnings to systemd: none is allowed.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("icup-orchestrator.service"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}

#[test]
fn the_unit_the_container_and_the_guide_start_the_same_command() {
    let command = exec_start(&read("deploy/icup-orchestrator.service"));
    assert_eq!(
        command,
        format!("{NODE_DIR}/images/current/bin/orchestrator --node-dir {NODE_DIR}")
    );
    let container = read("deploy/Containerfile");
    let entrypoint = container
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let args: Vec<String> = serde_json::from_str(entrypoint).unwrap();
    assert_eq!(args.join(" "), command);
    assert!(container.contains(&format!("VOLUME [\"{NODE_DIR}\"]")));
    let guide = read("DEPLOY.md");
    assert!(
        guide.contains(&format!("`{command}`")),
        "DEPLOY.md names the command"
    );
    assert!(guide.contains("deploy/icup-orchestrator.service"));
}
