//! The images directory: one directory per package, named by its SHA-256; the `current`
//! and `previous` symlinks; checking an image before it runs; pruning old images.

use crate::{
    MANIFEST_NAME, Manifest, REPLICA_BINARY, ReleaseError, normalize_sha256, package, sha256_file,
    sync_dir, unique_suffix,
};
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
/// The file in every image that records the SHA-256 of the package it was unpacked from
/// (64 lowercase hex characters and a newline). A reserved name in packages.
pub const PACKAGE_HASH_FILE: &str = "package.sha256";
/// The largest [`PACKAGE_HASH_FILE`] read.
const MAX_PACKAGE_HASH_FILE_BYTES: u64 = 128;

/// An unpacked image: which package it came from and which version its manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `images/<sha256>`.
    pub dir: PathBuf,
    /// The package's SHA-256, lowercase hex (the directory's name, and what the image
    /// records in [`PACKAGE_HASH_FILE`]).
    pub package_sha256: String,
    /// The version the manifest names.
    pub version: ReplicaVersion,
    /// The manifest's build description.
    pub build: String,
}

impl Image {
    /// A file of the image, by its path in the package (`bin/replica`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn replica_binary(&self) -> PathBuf {
        self.file(REPLICA_BINARY)
    }

    pub fn orchestrator_binary(&self) -> PathBuf {
        self.file(crate::ORCHESTRATOR_BINARY)
    }
}

/// `images_dir/<sha256>`, the directory of the image of the package with that hash.
pub fn image_dir(images_dir: &Path, sha256: &str) -> PathBuf {
    images_dir.join(sha256.to_ascii_lowercase())
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

/// Reads a small file whole, refusing one larger than `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    durable::read_bounded(path, limit).map_err(|e| format!("{}: {}", path.display(), e.source))
}

/// The identity of the image in `dir` without hashing its files: the hash it records
/// (which must be its directory's name), its manifest, and that every file the manifest
/// lists is a regular file. The reason if not.
fn read_identity(dir: &Path) -> Result<(Image, Manifest), String> {
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Err("not a directory".into());
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(normalize_sha256)
        .ok_or("its name is not a package's SHA-256")?;
    let recorded = read_bounded(&dir.join(PACKAGE_HASH_FILE), MAX_PACKAGE_HASH_FILE_BYTES)?;
    let recorded = String::from_utf8_lossy(&recorded).trim().to_string();
    if recorded != name {
        return Err(format!(
            "{PACKAGE_HASH_FILE} records package {recorded:?}, not {name}"
        ));
    }
    let manifest = read_bounded(&dir.join(MANIFEST_NAME), crate::MAX_MANIFEST_BYTES)?;
    let manifest = Manifest::from_json(&manifest).map_err(|e| format!("manifest: {e}"))?;
    for required in package::REQUIRED_BINARIES {
        if !manifest.files.contains_key(required) {
            return Err(format!("{required} is not in the manifest"));
        }
    }
    for file in manifest.files.keys() {
        let canonical = package::canonical_entry_path(Path::new(file));
        if canonical.as_deref() != Ok(file.as_str()) || file == PACKAGE_HASH_FILE {
            return Err(format!("manifest lists {file:?}"));
        }
        if !fs::symlink_metadata(dir.join(file)).is_ok_and(|m| m.is_file()) {
            return Err(format!("{file} is not a regular file"));
        }
    }
    let image = Image {
        dir: dir.to_path_buf(),
        package_sha256: name,
        version: manifest.version.clone(),
        build: manifest.build.clone(),
    };
    Ok((image, manifest))
}

/// The image of package `sha256`, read without hashing its files (fast: for showing, and
/// for an image this process verified already). Refused if it is missing, records
/// another hash, or misses a file its manifest lists.
pub fn inspect_image(images_dir: &Path, sha256: &str) -> Result<Image, ReleaseError> {
    let dir = image_dir(images_dir, sha256);
    if fs::symlink_metadata(&dir).is_err() {
        return Err(ReleaseError::NotUnpacked {
            images_dir: images_dir.to_path_buf(),
            sha256: sha256.to_string(),
        });
    }
    read_identity(&dir)
        .map(|(image, _)| image)
        .map_err(|reason| ReleaseError::ImageMismatch { image: dir, reason })
}

/// Checks, before anything in it is executed, that `images_dir/<sha256>` is the image of
/// package `sha256` for `version`: it records that hash, its manifest names that version,
/// and every file has the manifest's SHA-256 (this reads every file). The reason if not.
pub fn verify_image(
    images_dir: &Path,
    sha256: &str,
    version: &ReplicaVersion,
) -> Result<Image, ReleaseError> {
    let image = inspect_image(images_dir, sha256)?;
    let mismatch = |reason: String| ReleaseError::ImageMismatch {
        image: image.dir.clone(),
        reason,
    };
    if image.version != *version {
        return Err(mismatch(format!(
            "its manifest names version {}, not {version}",
            image.version
        )));
    }
    check_files(&image.dir).map_err(mismatch)?;
    Ok(image)
}

/// Hashes every file the manifest of the image in `dir` lists against the manifest.
pub(crate) fn check_files(dir: &Path) -> Result<(), String> {
    let (_, manifest) = read_identity(dir)?;
    for (file, listed) in &manifest.files {
        let actual = sha256_file(&dir.join(file)).map_err(|e| e.to_string())?;
        if !listed.eq_ignore_ascii_case(&actual) {
            return Err(format!(
                "{file} has SHA-256 {actual}, the manifest says {listed}"
            ));
        }
    }
    Ok(())
}

/// The image a symlink in `images_dir` points at, if it is one.
fn link_target(images_dir: &Path, link: &str) -> Option<Image> {
    let target = fs::read_link(images_dir.join(link)).ok()?;
    let name = target.to_str()?;
    let sha256 = normalize_sha256(name).filter(|n| n == name)?;
    inspect_image(images_dir, &sha256).ok()
}

/// The image `images_dir/current` points at, if any (not hashed: see [`verify_image`]).
pub fn current(images_dir: &Path) -> Option<Image> {
    link_target(images_dir, CURRENT)
}

/// The image `images_dir/previous` points at, if any.
pub fn previous(images_dir: &Path) -> Option<Image> {
    link_target(images_dir, PREVIOUS)
}

/// When the node last switched images: the time `current` was last pointed somewhere,
/// once a switch made `previous` (`None` on a node that never switched). Read from the
/// links themselves so it survives the orchestrator re-executing into the new release.
pub fn last_switch(images_dir: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(images_dir.join(PREVIOUS)).ok()?;
    std::fs::symlink_metadata(images_dir.join(CURRENT))
        .and_then(|m| m.modified())
        .ok()
}

/// Points `name` at `target` (a relative symlink) atomically: a new symlink under a
/// temporary name, renamed over the old one.
fn replace_link(images_dir: &Path, name: &str, target: &str) -> Result<(), ReleaseError> {
    let tmp = images_dir.join(format!("{TMP_PREFIX}{name}-{}", unique_suffix()));
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| ReleaseError::io("create symlink", &tmp, e))?;
    let link = images_dir.join(name);
    // durable: a symlink replaced in place; switch_current syncs the directory once both
    // links are in place.
    if let Err(e) = fs::rename(&tmp, &link) {
        let _ = fs::remove_file(&tmp);
        return Err(ReleaseError::io("rename over", &link, e));
    }
    Ok(())
}

/// Points `images_dir/current` at the image of package `sha256`, which must be unpacked,
/// and `images_dir/previous` at what `current` pointed at before (if it pointed somewhere
/// else). Each symlink is replaced atomically; `previous` is written first, so a crash in
/// between leaves `current` as it was. Switching to the current image changes nothing.
pub fn switch_current(images_dir: &Path, sha256: &str) -> Result<(), ReleaseError> {
    let image = inspect_image(images_dir, sha256)?;
    let old = current(images_dir);
    if old
        .as_ref()
        .is_some_and(|o| o.package_sha256 == image.package_sha256)
    {
        return Ok(());
    }
    if let Some(old) = &old {
        replace_link(images_dir, PREVIOUS, &old.package_sha256)?;
    }
    replace_link(images_dir, CURRENT, &image.package_sha256)?;
    sync_dir(images_dir)?;
    tracing::info!(
        images = %images_dir.display(),
        version = %image.version,
        package = %image.package_sha256,
        previous = ?old.map(|o| o.package_sha256),
        "switched current image"
    );
    Ok(())
}

/// Removes images beyond `keep`, oldest (by modification time) first, and returns the
/// package hashes removed, oldest first.
///
/// Every image counts towards `keep`, but the targets of `current` and `previous` and
/// the packages in `protect` are never removed, so more than `keep` may remain. An image
/// is renamed to a temporary name before it is deleted, so a crash never leaves half an
/// image under a hash's name. Leftovers of interrupted work (`.tmp-*`) are removed
/// too. Entries that are not directories named by a SHA-256 are left alone.
pub fn prune(
    images_dir: &Path,
    keep: usize,
    protect: &[&str],
) -> Result<Vec<String>, ReleaseError> {
    let list_err = |e| ReleaseError::io("list", images_dir, e);
    let mut images: Vec<(SystemTime, String)> = Vec::new();
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
        if !meta.is_dir() || normalize_sha256(&name).as_deref() != Some(name.as_str()) {
            continue;
        }
        let modified = meta
            .modified()
            .map_err(|e| ReleaseError::io("stat", &entry.path(), e))?;
        images.push((modified, name));
    }
    for leftover in &leftovers {
        tracing::info!(path = %leftover.display(), "removing leftover of interrupted work");
        remove_any(leftover)?;
    }

    let pinned: Vec<String> = [CURRENT, PREVIOUS]
        .iter()
        .filter_map(|l| fs::read_link(images_dir.join(l)).ok())
        .filter_map(|t| t.to_str().map(str::to_string))
        .chain(protect.iter().map(|p| p.to_ascii_lowercase()))
        .collect();
    // Oldest first; the name breaks ties so the order does not depend on read_dir's.
    images.sort();
    let mut remaining = images.len();
    let mut removed = Vec::new();
    for (_, sha256) in images {
        if remaining <= keep {
            break;
        }
        if pinned.contains(&sha256) {
            continue;
        }
        let path = images_dir.join(&sha256);
        let doomed = images_dir.join(format!("{TMP_PREFIX}prune-{sha256}-{}", unique_suffix()));
        // durable: moved aside only to be deleted; the directory is synced below.
        fs::rename(&path, &doomed).map_err(|e| ReleaseError::io("move aside", &path, e))?;
        remove_any(&doomed)?;
        tracing::info!(images = %images_dir.display(), package = %sha256, "pruned image");
        remaining -= 1;
        removed.push(sha256);
    }
    if !removed.is_empty() || !leftovers.is_empty() {
        sync_dir(images_dir)?;
    }
    Ok(removed)
}
