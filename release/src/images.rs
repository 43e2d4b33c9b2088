//! The images directory: `current` and `previous` symlinks, and pruning old versions.

use crate::{ReleaseError, sync_dir, unique_suffix};
use std::{
    fs, io,
    path::{Path, PathBuf},
    time::SystemTime,
};
use types::ReplicaVersion;

/// The symlink to the image the node runs.
const CURRENT: &str = "current";
/// The symlink to the image `current` pointed at before the last switch.
const PREVIOUS: &str = "previous";
/// Prefix of everything in `images/` that is work in progress (never an image).
pub(crate) const TMP_PREFIX: &str = ".tmp-";
/// The most entries [`prune`] looks at in the images directory.
const MAX_IMAGES_DIR_ENTRIES: usize = 4096;

/// Refuses versions that cannot name a directory beside `current` and `previous`.
pub(crate) fn check_usable(version: &ReplicaVersion) -> Result<(), ReleaseError> {
    let reason = match version.as_str() {
        CURRENT | PREVIOUS => "the name of a symlink in the images directory",
        v if v.starts_with('.') => "names starting with '.' are reserved",
        _ => return Ok(()),
    };
    Err(ReleaseError::UnusableVersion {
        version: version.clone(),
        reason,
    })
}

/// Removes a file, symlink or directory tree.
pub(crate) fn remove_any(path: &Path) -> Result<(), ReleaseError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| ReleaseError::io("remove", path, e))
}

/// The version a symlink in `images_dir` points at, if it is one.
fn link_target(images_dir: &Path, link: &str) -> Option<ReplicaVersion> {
    let target = fs::read_link(images_dir.join(link)).ok()?;
    let name = target.to_str()?;
    let version = ReplicaVersion::new(name).ok()?;
    check_usable(&version).ok()?;
    Some(version)
}

/// The version `images_dir/current` points at, if any.
pub fn current(images_dir: &Path) -> Option<ReplicaVersion> {
    link_target(images_dir, CURRENT)
}

/// The version `images_dir/previous` points at, if any.
pub fn previous(images_dir: &Path) -> Option<ReplicaVersion> {
    link_target(images_dir, PREVIOUS)
}

/// Points `name` at `target` (a relative symlink) atomically: a new symlink under a
/// temporary name, renamed over the old one.
fn replace_link(images_dir: &Path, name: &str, target: &str) -> Result<(), ReleaseError> {
    let tmp = images_dir.join(format!("{TMP_PREFIX}{name}-{}", unique_suffix()));
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| ReleaseError::io("create symlink", &tmp, e))?;
    let link = images_dir.join(name);
    if let Err(e) = fs::rename(&tmp, &link) {
        let _ = fs::remove_file(&tmp);
        return Err(ReleaseError::io("rename over", &link, e));
    }
    Ok(())
}

/// Points `images_dir/current` at `version`, which must be unpacked, and
/// `images_dir/previous` at what `current` pointed at before (if it pointed somewhere
/// else). Each symlink is replaced atomically; `previous` is written first, so a crash in
/// between leaves `current` as it was. Switching to the current version changes nothing.
pub fn switch_current(images_dir: &Path, version: &ReplicaVersion) -> Result<(), ReleaseError> {
    check_usable(version)?;
    if !fs::symlink_metadata(images_dir.join(version.as_str())).is_ok_and(|m| m.is_dir()) {
        return Err(ReleaseError::NotUnpacked {
            images_dir: images_dir.to_path_buf(),
            version: version.clone(),
        });
    }
    let old = current(images_dir);
    if old.as_ref() == Some(version) {
        return Ok(());
    }
    if let Some(old) = &old {
        replace_link(images_dir, PREVIOUS, old.as_str())?;
    }
    replace_link(images_dir, CURRENT, version.as_str())?;
    sync_dir(images_dir)?;
    tracing::info!(images = %images_dir.display(), %version, previous = ?old, "switched current image");
    Ok(())
}

/// Removes images beyond `keep`, oldest (by modification time) first, and returns the
/// versions removed, oldest first.
///
/// Every image counts towards `keep`, but the targets of `current` and `previous` and
/// the versions in `protect` are never removed, so more than `keep` may remain. An image
/// is renamed to a temporary name before it is deleted, so a crash never leaves half an
/// image under a version's name. Leftovers of interrupted work (`.tmp-*`) are removed
/// too. Entries that are not directories named by a usable version are left alone.
pub fn prune(
    images_dir: &Path,
    keep: usize,
    protect: &[ReplicaVersion],
) -> Result<Vec<ReplicaVersion>, ReleaseError> {
    let list_err = |e| ReleaseError::io("list", images_dir, e);
    let mut images: Vec<(SystemTime, ReplicaVersion)> = Vec::new();
    let mut leftovers: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(images_dir)
        .map_err(list_err)?
        .take(MAX_IMAGES_DIR_ENTRIES)
    {
        let entry = entry.map_err(list_err)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with(TMP_PREFIX) {
            leftovers.push(entry.path());
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let Ok(version) = ReplicaVersion::new(name) else {
            continue;
        };
        if !meta.is_dir() || check_usable(&version).is_err() {
            continue;
        }
        let modified = meta
            .modified()
            .map_err(|e| ReleaseError::io("stat", &entry.path(), e))?;
        images.push((modified, version));
    }
    for leftover in &leftovers {
        tracing::info!(path = %leftover.display(), "removing leftover of interrupted work");
        remove_any(leftover)?;
    }

    let pinned: Vec<ReplicaVersion> = [current(images_dir), previous(images_dir)]
        .into_iter()
        .flatten()
        .chain(protect.iter().cloned())
        .collect();
    // Oldest first; the name breaks ties so the order does not depend on read_dir's.
    images.sort();
    let mut remaining = images.len();
    let mut removed = Vec::new();
    for (_, version) in images {
        if remaining <= keep {
            break;
        }
        if pinned.contains(&version) {
            continue;
        }
        let path = images_dir.join(version.as_str());
        let doomed = images_dir.join(format!("{TMP_PREFIX}prune-{version}-{}", unique_suffix()));
        fs::rename(&path, &doomed).map_err(|e| ReleaseError::io("move aside", &path, e))?;
        remove_any(&doomed)?;
        tracing::info!(images = %images_dir.display(), %version, "pruned image");
        remaining -= 1;
        removed.push(version);
    }
    if !removed.is_empty() || !leftovers.is_empty() {
        sync_dir(images_dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_not_versions_of_images() {
        for bad in ["current", "previous", ".", "..", ".tmp-unpack-x", ".hidden"] {
            let v = ReplicaVersion::new(bad).unwrap();
            assert!(check_usable(&v).is_err(), "{bad}");
        }
        for good in ["0.1.0", "current-1", "a.b"] {
            let v = ReplicaVersion::new(good).unwrap();
            assert!(check_usable(&v).is_ok(), "{good}");
        }
    }
}
