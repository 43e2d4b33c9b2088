//! Release packages: what the orchestrator downloads to switch versions.
//!
//! # The package
//!
//! A release package is a tar archive, gzip- or zstd-compressed ([`Format`]), holding
//! `manifest.json` (first) and the release's files, at least [`REPLICA_BINARY`]
//! (`bin/replica`) and [`ORCHESTRATOR_BINARY`] (`bin/orchestrator`). The manifest
//! ([`Manifest`]) is
//!
//! ```json
//! {"version": "0.2.0", "build": "git 1a2b3c", "files": {"bin/orchestrator": "<sha256 hex>", "bin/replica": "<sha256 hex>"}}
//! ```
//!
//! and lists every other file of the package with its SHA-256, no more and no fewer.
//! The registry's `replica_version_<v>` record names the SHA-256 of the whole package
//! file and the URLs to fetch it from.
//!
//! # The life of a package on a node
//!
//! 1. [`Downloader::fetch`] downloads it into a cache directory under the name
//!    `<sha256>` and returns a [`VerifiedPackage`], which exists only once the file's
//!    SHA-256 equals the registry's.
//! 2. [`unpack`] takes that [`VerifiedPackage`] and writes the files into
//!    `images/<sha256>/`, named by the package's SHA-256, refusing anything unsafe or not
//!    as the manifest says.
//! 3. [`verify_image`] checks an image against the registry's hash and version before
//!    anything in it is executed; [`switch_current`] points `images/current` at it (and
//!    `images/previous` at the one before); [`prune`] removes old images and
//!    [`prune_downloads`] old packages.
//!
//! **Invariant: nothing is unpacked before its SHA-256 matches the registry's.** [`unpack`]
//! accepts only a [`VerifiedPackage`], and the only ways to make one,
//! [`Downloader::fetch`] and [`VerifiedPackage::verify`], hash the file first.
//!
//! **Invariant: an image is named by its package's SHA-256, never by a version.** A
//! version id re-elected with another package gets another image; what runs is decided
//! by the hash the registry lists, and a version name never selects an image.
//!
//! # Download rules ([`Downloader::fetch`])
//!
//! - A cached `<sha256>` file is hashed first: if it matches it is returned without any
//!   request; if not it is deleted.
//! - The URLs are tried in order starting at index `first` (each node passes a different
//!   one, so the load spreads over the mirrors) and wrapping around.
//! - The body is written to `<sha256>.part`. If a `.part` exists (a transfer cut off
//!   earlier, from this URL or another), the request carries `Range: bytes=<len>-`; a `206`
//!   with the matching `Content-Range` appends, a `200` starts again from zero.
//! - A transfer cut off after some bytes arrived is resumed from the same URL, at most
//!   [`MAX_ATTEMPTS_PER_URL`] requests per URL and call.
//! - Once a body is complete its SHA-256 is checked; only a match is renamed to
//!   `<sha256>` (durably). A mismatch deletes the `.part`; if that download had resumed
//!   a partial file, the URL is tried once more from zero (the bad bytes may have come
//!   from another mirror), otherwise the next URL is tried.
//! - Bounds ([`DownloadLimits`]): every request waits at most the chunk timeout for its
//!   response head and for each chunk of the body; a request whose average rate, after a
//!   grace period, falls under the minimum is dropped (a mirror sending a byte every 29 s
//!   never trips a chunk timeout, but it trips this); the whole call, every URL
//!   included, ends at an overall deadline; a body larger than `max_bytes` is refused
//!   and its `.part` deleted.
//! - If every URL fails, [`ReleaseError::AllUrlsFailed`] lists each URL with its reason.
//! - One fetch at a time per cache directory (the `.part` file is shared).
//! - `http://` and `https://` URLs: TLS is rustls on the ring provider, with the
//!   Mozilla roots compiled in (webpki-roots, so it works without the system's store)
//!   plus any extra CA certificates given ([`DownloadLimits`] does not cover them:
//!   [`Downloader::with_extra_roots`]).
//! - [`prune_downloads`] keeps the newest packages of the cache and the protected ones.
//!
//! # Unpack rules ([`unpack`])
//!
//! - The format is recognized by its magic bytes, not by the file name.
//! - Entries must be regular files or directories (no symlinks, hard links, devices,
//!   FIFOs, sparse files), with relative paths made of normal components only (`./` is
//!   ignored; `..`, absolute paths and non-UTF-8 names are refused), each file at most
//!   once. File modes keep only the permission bits `0o755`. [`PACKAGE_HASH_FILE`] is a
//!   reserved name.
//! - At most [`MAX_ENTRIES`] entries and [`MAX_UNPACKED_BYTES`] bytes of file contents
//!   ([`UnpackLimits`]); the manifest at most [`MAX_MANIFEST_BYTES`].
//! - The manifest's version must be the expected one; every file must have the
//!   manifest's SHA-256; the manifest's files must all be present, and must include the
//!   two binaries.
//! - Everything is written into a temporary directory `images/.tmp-unpack-*`, with
//!   [`PACKAGE_HASH_FILE`] recording the package's SHA-256, synced, and renamed to
//!   `images/<sha256>` only when every check passed, so a crash or a refusal never leaves
//!   a half image under a hash's name. An image already there and intact (it records
//!   this hash, its manifest names this version and every file matches) is reused; a
//!   damaged one is replaced.
//!
//! # The images directory
//!
//! ```text
//! images/
//!   current  -> <sha256 B>     symlink, replaced atomically by switch_current
//!   previous -> <sha256 A>     symlink, the target `current` had before
//!   <sha256 A>/ <sha256 B>/    one directory per unpacked package:
//!       manifest.json          the package's manifest (version, build, file hashes)
//!       package.sha256         the package's SHA-256 (PACKAGE_HASH_FILE)
//!       bin/replica bin/orchestrator ...
//!   .tmp-*                     work in progress; removed by prune
//! ```
//!
//! [`current`] and [`previous`] read an image's identity ([`Image`]: the package hash
//! and the manifest's version) without hashing its files; [`verify_image`] hashes every
//! file against the manifest and checks the hash and the version asked for. The
//! functions on the images directory expect one caller at a time (the orchestrator).

mod download;
mod images;
mod package;
mod unpack;

pub use download::{
    DownloadLimits, Downloader, MAX_ATTEMPTS_PER_URL, MAX_CACHE_DIR_ENTRIES,
    PROGRESS_LOG_INTERVAL_BYTES, Progress, prune_downloads,
};
pub use images::{
    Image, PACKAGE_HASH_FILE, current, image_dir, inspect_image, last_switch, previous, prune,
    switch_current, verify_image,
};
pub use package::{
    Format, MANIFEST_NAME, MAX_ENTRIES, MAX_MANIFEST_BYTES, MAX_UNPACKED_BYTES, Manifest,
    ORCHESTRATOR_BINARY, REPLICA_BINARY, UnpackLimits, VerifiedPackage, build_package,
};
pub use unpack::{unpack, unpack_with_limits};

use std::{
    fmt,
    io::{self, Read},
    path::{Path, PathBuf},
};
use types::ReplicaVersion;

/// One URL's reason for failing, in [`ReleaseError::AllUrlsFailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlFailure {
    pub url: String,
    pub reason: String,
}

impl fmt::Display for UrlFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.reason)
    }
}

fn list_failures(failures: &[UrlFailure]) -> String {
    failures
        .iter()
        .map(UrlFailure::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong with a release package.
///
/// [`ReleaseError::is_retryable`] splits them: a failed download may work next time; a
/// package refused by [`unpack`] or [`build_package`] will be refused again.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("no URL to download package {sha256} from")]
    NoUrls { sha256: String },
    #[error("expected SHA-256 {given:?} is not 64 hexadecimal characters")]
    BadExpectedHash { given: String },
    #[error("could not build the HTTP client: {reason}")]
    HttpClient { reason: String },
    #[error("every URL failed for package {sha256}: {}", list_failures(.failures))]
    AllUrlsFailed {
        sha256: String,
        failures: Vec<UrlFailure>,
    },
    #[error("{path}: SHA-256 is {actual}, expected {expected}")]
    PackageHashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unknown package format ({reason})")]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{package}: not a readable package: {reason}")]
    Archive { package: PathBuf, reason: String },
    #[error("{package}: entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        package: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{package}: more than {limit} {what}")]
    TooLarge {
        package: PathBuf,
        what: &'static str,
        limit: u64,
    },
    #[error("{package}: bad manifest: {reason}")]
    BadManifest { package: PathBuf, reason: String },
    #[error("{package}: manifest says version {found}, expected {expected}")]
    VersionMismatch {
        package: PathBuf,
        expected: ReplicaVersion,
        found: ReplicaVersion,
    },
    #[error("{package}: {file} has SHA-256 {actual}, the manifest says {expected}")]
    FileHashMismatch {
        package: PathBuf,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{package}: {file} is in the manifest but not in the package")]
    MissingFile { package: PathBuf, file: String },
    #[error("{package}: {file} is in the package but not in the manifest")]
    UnlistedFile { package: PathBuf, file: String },
    #[error("package {package}: {reason}")]
    BadInput { package: PathBuf, reason: String },
    #[error("{images_dir}: no image of package {sha256}")]
    NotUnpacked { images_dir: PathBuf, sha256: String },
    #[error("image {image}: {reason}")]
    ImageMismatch { image: PathBuf, reason: String },
    #[error("could not read the CA certificates in {path}: {reason}")]
    ExtraRoots { path: PathBuf, reason: String },
}

impl ReleaseError {
    /// Whether trying again later (next orchestrator tick) may succeed: true for
    /// download and I/O failures, false for a package or input that is wrong.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::AllUrlsFailed { .. }
                | Self::Io { .. }
                | Self::HttpClient { .. }
                | Self::PackageHashMismatch { .. }
                | Self::NotUnpacked { .. }
        )
    }

    pub(crate) fn durable(e: durable::Error) -> Self {
        Self::Io {
            operation: e.operation,
            path: e.path,
            source: e.source,
        }
    }

    pub(crate) fn io(operation: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Size of the buffer files are hashed and copied through.
pub(crate) const IO_BUFFER_BYTES: usize = 64 * 1024;

/// Lowercase hex of the SHA-256 of everything `reader` yields.
pub(crate) fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; IO_BUFFER_BYTES];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Lowercase hex of the SHA-256 of the file at `path`.
pub(crate) fn sha256_file(path: &Path) -> Result<String, ReleaseError> {
    let file = std::fs::File::open(path).map_err(|e| ReleaseError::io("open", path, e))?;
    sha256_reader(file).map_err(|e| ReleaseError::io("read", path, e))
}

/// The canonical form of a SHA-256 given as text: 64 hex characters, lowercased.
pub(crate) fn normalize_sha256(given: &str) -> Option<String> {
    (given.len() == 64 && given.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| given.to_ascii_lowercase())
}

/// Syncs a directory, so that a rename or a new entry in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ReleaseError> {
    durable::sync_dir(dir).map_err(ReleaseError::durable)
}

/// Renames durably ([`durable::rename`]: the directories are synced).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), ReleaseError> {
    durable::rename(from, to).map_err(ReleaseError::durable)
}

/// A name unique within this process for temporary files and directories.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_hashes_are_normalized_or_refused() {
        let upper = "AB".repeat(32);
        assert_eq!(normalize_sha256(&upper), Some("ab".repeat(32)));
        assert_eq!(normalize_sha256(&"ab".repeat(31)), None);
        assert_eq!(normalize_sha256(&format!("{}zz", "ab".repeat(31))), None);
        assert_eq!(normalize_sha256(""), None);
    }

    #[test]
    fn sha256_matches_the_known_answer() {
        assert_eq!(
            sha256_reader(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
