//! The rehearsal of a migration, behind `replica --check`: the state this release would
//! start from is copied (hard links) from a checkpoint, migrated to this release's
//! schema, checked (the state tree recomputed from every value must match the index the
//! migration wrote) and timed. The checked copy is kept, in its own directory
//! ([`NodeDir::premigrated`]), for the switch: the replica that starts from the CUP brings
//! it up to the CUP's state instead of migrating every value on the upgrade's critical
//! path (`state::ahead`). Nothing of the node's own state is written.

use crate::{
    ReplicaError,
    node_dir::NodeDir,
    state::{ReplicatedState, SCHEMA_VERSION},
};
use std::{path::PathBuf, time::Instant};
use types::Height;

/// What a rehearsed migration did, for the orchestrator's `upgrade.preflight`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MigrationReport {
    /// The checkpoint's height (the copy's source).
    pub height: u64,
    pub schema_from: u32,
    pub schema_to: u32,
    /// Values rewritten by the migration.
    pub values_migrated: u64,
    pub migration_ms: u64,
    /// The copy's state hash after the migration (the new release's, at that height).
    pub state_hash_after: String,
    /// Whether the migrated copy was kept for the switch (see the module's comment).
    pub kept_for_the_switch: bool,
}

/// The checkpoint to rehearse on: the one at `cup_height` if this node has it, else its
/// newest (while the subnet runs, the state is ahead of the CUP; the newest checkpoint
/// is the latest state this node wrote down whole). `None`: no checkpoint yet.
fn source(dir: &NodeDir, cup_height: Height) -> Option<(Height, PathBuf)> {
    let at_cup = dir.checkpoint(cup_height);
    if at_cup.join("CURRENT").exists() {
        return Some((cup_height, at_cup));
    }
    let newest = std::fs::read_dir(dir.checkpoints())
        .ok()?
        .take(1024)
        .flatten()
        .filter_map(|e| {
            let h = e.file_name().to_str()?.parse::<u64>().ok()?;
            e.path().join("CURRENT").exists().then_some(h)
        })
        .max()?;
    Some((Height::new(newest), dir.checkpoint(Height::new(newest))))
}

/// Rehearses this release's migration on a copy of the checkpoint at (or the newest
/// below) `cup_height`. `Ok(None)`: no checkpoint to rehearse on.
pub fn rehearse(
    dir: &NodeDir,
    cup_height: Height,
) -> Result<Option<MigrationReport>, ReplicaError> {
    let Some((height, src)) = source(dir, cup_height) else {
        return Ok(None);
    };
    let copy = dir
        .root
        .join("replica")
        .join(format!("preflight-{}", std::process::id()));
    let result = migrate_copy(&src, &copy, height).and_then(|mut report| {
        if report.schema_from < report.schema_to {
            keep(&copy, &dir.premigrated())?;
            report.kept_for_the_switch = true;
        }
        Ok(report)
    });
    let _ = std::fs::remove_dir_all(&copy);
    result.map(Some)
}

/// Puts the checked copy in place of any older one (a crash leaves one or the other).
fn keep(copy: &std::path::Path, kept: &std::path::Path) -> Result<(), ReplicaError> {
    let io = |e: std::io::Error| ReplicaError::Io(format!("{}: {e}", kept.display()));
    if kept.exists() {
        std::fs::remove_dir_all(kept).map_err(io)?;
    }
    durable::rename(copy, kept).map_err(|e| ReplicaError::Io(e.to_string()))
}

fn migrate_copy(
    src: &std::path::Path,
    copy: &std::path::Path,
    height: Height,
) -> Result<MigrationReport, ReplicaError> {
    if copy.exists() {
        std::fs::remove_dir_all(copy)
            .map_err(|e| ReplicaError::Io(format!("{}: {e}", copy.display())))?;
    }
    let (_, _, found) = ReplicatedState::peek_any(src)?;
    if found > SCHEMA_VERSION {
        return Err(ReplicaError::Refused(format!(
            "the checkpoint in {} is in state schema {found}; this release reads up to {SCHEMA_VERSION}",
            src.display()
        )));
    }
    let mut state = ReplicatedState::copy(src, copy)?;
    let started = Instant::now();
    let values_migrated = state.migrate_keeping_base()?;
    let migration_ms = started.elapsed().as_millis() as u64;
    let after = state.state_hash();
    let recomputed = state.recompute_hash()?;
    if recomputed != after {
        return Err(ReplicaError::Refused(format!(
            "the migrated copy of the checkpoint at height {height} is inconsistent: its index says {after}, its values hash to {recomputed}"
        )));
    }
    // Into table files, so the switch opens it without replaying the migration's log.
    state.flush()?;
    Ok(MigrationReport {
        height: height.get(),
        schema_from: found,
        schema_to: state.schema(),
        values_migrated,
        migration_ms,
        state_hash_after: after.to_string(),
        kept_for_the_switch: false,
    })
}
