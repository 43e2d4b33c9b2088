//! Unpacking a verified package into `images/<sha256>/`: every entry checked (paths,
//! kinds, modes, sizes, the manifest's hashes) within [`UnpackLimits`], written to a
//! temporary directory and renamed into place only once all of it checks out.

use crate::package::*;
use crate::{ReleaseError, images, sync_dir, unique_suffix};
use images::PACKAGE_HASH_FILE;
use sha2::Digest;
use std::{
    cell::Cell,
    collections::BTreeMap,
    fs,
    io::{self, Read, Seek, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    rc::Rc,
};
use types::ReplicaVersion;

/// A reader that fails once more than `remaining` bytes are read, and says so in
/// `exceeded` (the tar reader wraps errors, so the flag is how the cause is recovered).
struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(io::Error::other("decompressed package exceeds its bound"))
                }
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Unpacks a verified package into `images_dir/<sha256>/` with the default bounds; see
/// [`unpack_with_limits`] and the crate docs for the rules.
pub fn unpack(
    package: &VerifiedPackage,
    expected: &ReplicaVersion,
    images_dir: &Path,
) -> Result<PathBuf, ReleaseError> {
    unpack_with_limits(package, expected, images_dir, &UnpackLimits::DEFAULT)
}

/// Unpacks a verified package into `images_dir/<sha256>/` (the package's hash) and
/// returns that directory.
///
/// If the directory exists and is intact ([`crate::verify_image`]: it records this hash,
/// its manifest names `expected` and every file it lists has its hash) it is returned as
/// it is. Otherwise the package is unpacked into
/// a temporary directory in `images_dir`, checked completely (crate docs, "Unpack
/// rules"), and renamed into place, replacing a damaged image if there was one. On any
/// refusal the temporary directory is removed and `images_dir/<sha256>` is untouched.
pub fn unpack_with_limits(
    package: &VerifiedPackage,
    expected: &ReplicaVersion,
    images_dir: &Path,
    limits: &UnpackLimits,
) -> Result<PathBuf, ReleaseError> {
    fs::create_dir_all(images_dir).map_err(|e| ReleaseError::io("create", images_dir, e))?;
    let target = images::image_dir(images_dir, package.sha256());
    let existing = fs::symlink_metadata(&target).is_ok();
    if existing {
        match images::verify_image(images_dir, package.sha256(), expected) {
            Ok(_) => {
                tracing::info!(image = %target.display(), %expected, "image already unpacked and intact");
                return Ok(target);
            }
            Err(reason) => {
                tracing::warn!(image = %target.display(), %expected, %reason, "image damaged; unpacking again");
            }
        }
    }

    let suffix = unique_suffix();
    let tmp = images_dir.join(format!(".tmp-unpack-{}-{suffix}", package.sha256()));
    fs::create_dir(&tmp).map_err(|e| ReleaseError::io("create", &tmp, e))?;
    if let Err(e) = extract_and_check(package, &tmp, expected, limits) {
        tracing::warn!(package = %package.path().display(), %expected, error = %e, "package refused");
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    let aside = images_dir.join(format!(".tmp-damaged-{}-{suffix}", package.sha256()));
    if existing && let Err(e) = crate::rename(&target, &aside) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = crate::rename(&tmp, &target) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if existing {
        images::remove_any(&aside)?;
    }
    tracing::info!(package = %package.path().display(), image = %target.display(), %expected, "unpacked release package");
    Ok(target)
}

/// Reads the package, writes its files under `tmp` and checks them against the manifest.
fn extract_and_check(
    verified: &VerifiedPackage,
    tmp: &Path,
    expected: &ReplicaVersion,
    limits: &UnpackLimits,
) -> Result<(), ReleaseError> {
    let package = verified.path();
    let mut file = fs::File::open(package).map_err(|e| ReleaseError::io("open", package, e))?;
    let mut magic = [0u8; ZSTD_MAGIC.len()];
    let got = file
        .read(&mut magic)
        .map_err(|e| ReleaseError::io("read", package, e))?;
    let format = Format::from_magic(&magic[..got]).ok_or_else(|| ReleaseError::UnknownFormat {
        path: package.to_path_buf(),
        reason: "neither gzip nor zstd magic bytes".into(),
    })?;
    file.rewind()
        .map_err(|e| ReleaseError::io("seek", package, e))?;
    let decoder: Box<dyn Read> = match format {
        Format::TarGz => Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file))),
        Format::TarZst => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(|e| ReleaseError::io("read", package, e))?,
        ),
    };
    let exceeded = Rc::new(Cell::new(false));
    let stream_bound = limits
        .max_bytes
        .saturating_add(MAX_MANIFEST_BYTES)
        .saturating_add(
            limits
                .max_entries
                .saturating_add(1)
                .saturating_mul(TAR_OVERHEAD_PER_ENTRY_BYTES),
        );
    let mut archive = tar::Archive::new(LimitedReader {
        inner: decoder,
        remaining: stream_bound,
        exceeded: exceeded.clone(),
    });
    let archive_err = |e: io::Error| {
        if exceeded.get() {
            ReleaseError::TooLarge {
                package: package.to_path_buf(),
                what: "bytes of decompressed data",
                limit: stream_bound,
            }
        } else {
            ReleaseError::Archive {
                package: package.to_path_buf(),
                reason: e.to_string(),
            }
        }
    };
    let refuse = |entry: &str, reason: String| ReleaseError::UnsafeEntry {
        package: package.to_path_buf(),
        entry: entry.to_string(),
        reason,
    };

    let mut written: BTreeMap<String, String> = BTreeMap::new();
    let mut manifest: Option<(Manifest, Vec<u8>)> = None;
    let mut entry_count: u64 = 0;
    let mut content_bytes: u64 = 0;
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        entry_count += 1;
        if entry_count > limits.max_entries {
            return Err(ReleaseError::TooLarge {
                package: package.to_path_buf(),
                what: "entries",
                limit: limits.max_entries,
            });
        }
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = entry.path().map_err(archive_err)?;
        let name = canonical_entry_path(&path).map_err(|r| refuse(&raw_name, r.to_string()))?;
        let header = entry.header();
        match header.entry_type() {
            _ if name == PACKAGE_HASH_FILE => {
                return Err(refuse(
                    &raw_name,
                    format!("{PACKAGE_HASH_FILE} is a reserved name"),
                ));
            }
            tar::EntryType::Directory => {
                if name == MANIFEST_NAME {
                    return Err(refuse(&raw_name, "the manifest must be a file".into()));
                }
                let dir = tmp.join(&name);
                fs::create_dir_all(&dir).map_err(|e| ReleaseError::io("create", &dir, e))?;
            }
            tar::EntryType::Regular => {
                let size = header.size().map_err(archive_err)?;
                let mode = header.mode().map_err(archive_err)?;
                content_bytes = content_bytes.saturating_add(size);
                if content_bytes > limits.max_bytes {
                    return Err(ReleaseError::TooLarge {
                        package: package.to_path_buf(),
                        what: "bytes of file contents",
                        limit: limits.max_bytes,
                    });
                }
                if name == MANIFEST_NAME {
                    if manifest.is_some() {
                        return Err(refuse(&raw_name, "the manifest appears twice".into()));
                    }
                    manifest = Some(read_manifest(&mut entry, size, package, expected)?);
                    continue;
                }
                if written.contains_key(&name) || tmp.join(&name).exists() {
                    return Err(refuse(&raw_name, "the file appears twice".into()));
                }
                let hash = write_file(&mut entry, tmp, &name, mode).map_err(|e| match e {
                    WriteError::Archive(e) => archive_err(e),
                    WriteError::Io(operation, path, e) => ReleaseError::io(operation, &path, e),
                })?;
                written.insert(name, hash);
            }
            other => {
                return Err(refuse(
                    &raw_name,
                    format!("{other:?} entries are not allowed (only files and directories)"),
                ));
            }
        }
    }

    let Some((manifest, manifest_bytes)) = manifest else {
        return Err(ReleaseError::BadManifest {
            package: package.to_path_buf(),
            reason: format!("no {MANIFEST_NAME}"),
        });
    };
    for (file, listed) in &manifest.files {
        let canonical = canonical_entry_path(Path::new(file));
        if canonical.as_deref() != Ok(file.as_str()) || file == MANIFEST_NAME {
            return Err(ReleaseError::BadManifest {
                package: package.to_path_buf(),
                reason: format!("it lists {file:?}, not a canonical file path"),
            });
        }
        let Some(listed) = crate::normalize_sha256(listed) else {
            return Err(ReleaseError::BadManifest {
                package: package.to_path_buf(),
                reason: format!("the hash of {file} is not 64 hexadecimal characters"),
            });
        };
        match written.get(file) {
            None => {
                return Err(ReleaseError::MissingFile {
                    package: package.to_path_buf(),
                    file: file.clone(),
                });
            }
            Some(actual) if *actual != listed => {
                return Err(ReleaseError::FileHashMismatch {
                    package: package.to_path_buf(),
                    file: file.clone(),
                    expected: listed,
                    actual: actual.clone(),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(file) = written.keys().find(|f| !manifest.files.contains_key(*f)) {
        return Err(ReleaseError::UnlistedFile {
            package: package.to_path_buf(),
            file: file.clone(),
        });
    }
    for required in REQUIRED_BINARIES {
        if !manifest.files.contains_key(required) {
            return Err(ReleaseError::MissingFile {
                package: package.to_path_buf(),
                file: required.to_string(),
            });
        }
        let path = tmp.join(required);
        fs::set_permissions(&path, fs::Permissions::from_mode(EXECUTABLE_MODE))
            .map_err(|e| ReleaseError::io("chmod", &path, e))?;
    }

    durable::write(&tmp.join(MANIFEST_NAME), &manifest_bytes).map_err(ReleaseError::durable)?;
    // What the image is named by, recorded inside it: the check before a run reads it.
    durable::write(
        &tmp.join(PACKAGE_HASH_FILE),
        format!("{}\n", verified.sha256()).as_bytes(),
    )
    .map_err(ReleaseError::durable)?;
    sync_tree(tmp)
}

/// Reads and parses the manifest entry, and checks its version at once (fail fast).
fn read_manifest(
    entry: &mut impl Read,
    size: u64,
    package: &Path,
    expected: &ReplicaVersion,
) -> Result<(Manifest, Vec<u8>), ReleaseError> {
    if size > MAX_MANIFEST_BYTES {
        return Err(ReleaseError::TooLarge {
            package: package.to_path_buf(),
            what: "bytes of manifest",
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let mut bytes = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| ReleaseError::Archive {
            package: package.to_path_buf(),
            reason: format!("reading {MANIFEST_NAME}: {e}"),
        })?;
    let manifest = Manifest::from_json(&bytes).map_err(|e| ReleaseError::BadManifest {
        package: package.to_path_buf(),
        reason: e.to_string(),
    })?;
    if manifest.version != *expected {
        return Err(ReleaseError::VersionMismatch {
            package: package.to_path_buf(),
            expected: expected.clone(),
            found: manifest.version,
        });
    }
    Ok((manifest, bytes))
}

/// Why writing one entry failed: reading the package, or writing the file.
enum WriteError {
    Archive(io::Error),
    Io(&'static str, PathBuf, io::Error),
}

/// Writes one file entry to `tmp/name` durably, returning its SHA-256.
fn write_file(
    entry: &mut impl Read,
    tmp: &Path,
    name: &str,
    mode: u32,
) -> Result<String, WriteError> {
    let path = tmp.join(name);
    let io = |operation: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e| WriteError::Io(operation, path, e)
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    // A read error of the archive is told apart from a write error through this slot.
    let mut archive_error: Option<io::Error> = None;
    let written = durable::write_with(&path, 0o600, |file| {
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; crate::IO_BUFFER_BYTES];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let kind = e.kind();
                    archive_error = Some(e);
                    return Err(io::Error::new(kind, "reading the package"));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
        }
        Ok(hex::encode(hasher.finalize()))
    });
    let hash = match written {
        Ok(hash) => hash,
        Err(e) => {
            return Err(match archive_error {
                Some(a) => WriteError::Archive(a),
                None => WriteError::Io(e.operation, e.path, e.source),
            });
        }
    };
    fs::set_permissions(&path, fs::Permissions::from_mode(mode & UNPACKED_MODE_MASK))
        .map_err(io("chmod", &path))?;
    Ok(hash)
}

/// Syncs every directory under `root` (files were synced as they were written), bounded
/// by the entries a package may have.
fn sync_tree(root: &Path) -> Result<(), ReleaseError> {
    let mut stack = vec![root.to_path_buf()];
    let mut visited: u64 = 0;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > MAX_ENTRIES + 1 {
            break;
        }
        for child in fs::read_dir(&dir).map_err(|e| ReleaseError::io("list", &dir, e))? {
            let child = child.map_err(|e| ReleaseError::io("list", &dir, e))?;
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(child.path());
            }
        }
        sync_dir(&dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limited_reader_flags_what_it_cuts() {
        let exceeded = Rc::new(Cell::new(false));
        let mut r = LimitedReader {
            inner: &b"hello"[..],
            remaining: 5,
            exceeded: exceeded.clone(),
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        assert!(!exceeded.get());

        let mut r = LimitedReader {
            inner: &b"hello!"[..],
            remaining: 5,
            exceeded: exceeded.clone(),
        };
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        assert!(exceeded.get());
    }
}
