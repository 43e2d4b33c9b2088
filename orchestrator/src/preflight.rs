//! Preflight: as soon as the registry deploys a new release to the subnet and it is
//! downloaded and verified, its `replica --check` runs beside the loop against this
//! node's CUP, rehearsing the migration on a hard-link copy of a checkpoint. The verdict
//! goes to `/status` (`upgrade.preflight`) and to `DIR/upgrade-readiness.json`, which the
//! running replica signs and gossips as this node's readiness: the subnet halts for the
//! release only once `n - f` nodes are ready for it (the `consensus` crate's status rule).

use crate::{decide::Release, server::PreflightView, switch};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where the verdict is written for the replica (`replica::node_dir::READINESS_FILE`).
pub const READINESS_FILE: &str = "upgrade-readiness.json";
/// The most of it read back (the replica reads at most as much:
/// `replica::node_dir::MAX_READINESS_FILE_BYTES`).
pub const MAX_READINESS_FILE_BYTES: u64 = 4096;
/// Where the replica reports its own part in the subnet (`replica::node_dir::PROGRESS_FILE`),
/// and the most of it read.
pub const PROGRESS_FILE: &str = "replica-progress.json";
pub const MAX_PROGRESS_FILE_BYTES: u64 = 4096;

/// The highest finalized height whose notarization or finalization carries this node's
/// share, as the replica of `version` last reported it (none from another release's).
pub fn own_share_height(node_dir: &Path, version: &types::ReplicaVersion) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Progress {
        version: types::ReplicaVersion,
        own_share_height: Option<u64>,
    }
    let bytes =
        durable::read_bounded(&node_dir.join(PROGRESS_FILE), MAX_PROGRESS_FILE_BYTES).ok()?;
    let p: Progress = serde_json::from_slice(&bytes).ok()?;
    (&p.version == version)
        .then_some(p.own_share_height)
        .flatten()
}

/// One preflight running beside the loop.
#[derive(Debug)]
pub struct Job {
    pub release: Release,
    started: Instant,
    handle: tokio::task::JoinHandle<Result<String, String>>,
}

impl Job {
    /// Starts `image`'s rehearsal against the CUP at `cup` (the image is `release`'s,
    /// verified by the caller).
    pub fn spawn(release: Release, node_dir: PathBuf, cup: PathBuf, image: release::Image) -> Self {
        let handle = tokio::spawn(async move { switch::rehearse(&node_dir, &cup, &image).await });
        Self {
            release,
            started: Instant::now(),
            handle,
        }
    }

    /// The verdict, once the rehearsal finished.
    pub async fn take_if_done(&mut self) -> Option<PreflightView> {
        if !self.handle.is_finished() {
            return None;
        }
        let result = (&mut self.handle)
            .await
            .unwrap_or_else(|e| Err(format!("the preflight task failed: {e}")));
        Some(view(&self.release, result, self.started.elapsed()))
    }
}

/// The `/status` view of a finished rehearsal, from the plan `replica --check` printed.
pub fn view(release: &Release, result: Result<String, String>, elapsed: Duration) -> PreflightView {
    let mut v = PreflightView {
        version: release.version.clone(),
        package_sha256: release.package_sha256.clone(),
        ok: result.is_ok(),
        reason: result.as_ref().err().cloned(),
        migration_ms: None,
        schema_from: None,
        schema_to: None,
        values_migrated: None,
        checkpoint_height: None,
        kept_for_the_switch: false,
        elapsed_ms: elapsed.as_millis() as u64,
        finished_unix_ms: crate::node::unix_ms(),
    };
    if let Ok(plan) = result
        && let Ok(json) = serde_json::from_str::<serde_json::Value>(&plan)
    {
        let m = &json["migration"];
        v.migration_ms = m["migration_ms"].as_u64();
        v.schema_from = m["schema_from"].as_u64().map(|x| x as u32);
        v.schema_to = m["schema_to"].as_u64().map(|x| x as u32);
        v.values_migrated = m["values_migrated"].as_u64();
        v.checkpoint_height = m["height"].as_u64();
        v.kept_for_the_switch = m["kept_for_the_switch"].as_bool().unwrap_or(false);
    }
    v
}

/// Writes this node's readiness for `version` where the replica reads it, if it
/// changed (durably: a replica restarted after a crash reads the same verdict).
pub fn write_readiness(
    node_dir: &Path,
    version: &types::ReplicaVersion,
    ready: bool,
    reason: &str,
) -> Result<(), String> {
    let path = node_dir.join(READINESS_FILE);
    let body = serde_json::json!({"version": version, "ready": ready, "reason": reason})
        .to_string()
        .into_bytes();
    // The file is this node's own, small; a larger one is written over.
    if durable::read_bounded(&path, MAX_READINESS_FILE_BYTES).is_ok_and(|old| old == body) {
        return Ok(());
    }
    durable::write(&path, &body).map_err(|e| format!("{}: {e}", path.display()))
}

/// Removes the verdict when no release is deployed beyond the running one.
pub fn clear_readiness(node_dir: &Path) {
    let _ = std::fs::remove_file(node_dir.join(READINESS_FILE));
}
