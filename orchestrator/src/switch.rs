//! The effects of a switch: the new release's rehearsal, and the re-execution into its
//! orchestrator.

use std::{path::Path, time::Duration};

/// The longest a new release's rehearsal (`replica --check`) may take.
pub const REHEARSAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Set by an orchestrator on the one it re-executes into: the package SHA-256 of the
/// image it verified a moment ago, so the new process does not read it all again on the
/// upgrade's critical path. Honoured only for the image `images/current` names.
pub const VERIFIED_IMAGE_ENV: &str = "ICUP_VERIFIED_IMAGE";

/// Runs the image's replica with `--check` against the persisted best CUP `cup`: every
/// check a start makes, whether it can read the state, and its migration rehearsed on a
/// copy of a checkpoint, with nothing of the node's written. Returns the plan (JSON).
pub async fn rehearse(
    node_dir: &Path,
    cup: &Path,
    image: &release::Image,
) -> Result<String, String> {
    let binary = image.replica_binary();
    let run = tokio::process::Command::new(&binary)
        .arg("--node-dir")
        .arg(node_dir)
        .arg("--version")
        .arg(image.version.as_str())
        .arg("--cup")
        .arg(cup)
        .arg("--check")
        .env_remove(VERIFIED_IMAGE_ENV)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(REHEARSAL_TIMEOUT, run)
        .await
        .map_err(|_| {
            format!(
                "its rehearsal did not finish within {} s",
                REHEARSAL_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if out.status.success() {
        let plan = String::from_utf8_lossy(&out.stdout).trim().to_string();
        tracing::info!(to = %image.version, %plan, "rehearsal passed");
        return Ok(plan);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no reason given")
        .trim()
        .trim_start_matches("replica: ")
        .to_string();
    Err(format!("its rehearsal failed ({}): {reason}", out.status))
}

/// Replaces this process with `binary --node-dir DIR`, telling it that the image of
/// package `sha256` was just verified, and the switch's stages so far
/// ([`crate::handover::SwitchTimes`]); returns only on failure.
pub fn exec_into(
    binary: &Path,
    node_dir: &Path,
    sha256: &str,
    switch_times: Option<&str>,
) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("--node-dir")
        .arg(node_dir)
        .env(VERIFIED_IMAGE_ENV, sha256)
        .env_remove(crate::handover::SWITCH_TIMES_ENV);
    if let Some(t) = switch_times {
        cmd.env(crate::handover::SWITCH_TIMES_ENV, t);
    }
    cmd.exec()
}
