//! The package format: its manifest, its compression, and building one (unpacking one:
//! `unpack.rs`).

use crate::{ReleaseError, sha256_file};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
};
use types::ReplicaVersion;

/// The manifest's name in a package and in an unpacked image.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The replica binary, required in every package.
pub const REPLICA_BINARY: &str = "bin/replica";
/// The orchestrator binary, required in every package.
pub const ORCHESTRATOR_BINARY: &str = "bin/orchestrator";
/// The files every package must hold (besides the manifest); unpacked with mode 0755.
pub(crate) const REQUIRED_BINARIES: [&str; 2] = [REPLICA_BINARY, ORCHESTRATOR_BINARY];

/// The most entries (files and directories) one package may hold.
pub const MAX_ENTRIES: u64 = 1024;
/// The most bytes of file contents one package may unpack to (the sum of the sizes).
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;
/// The largest `manifest.json`.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Bytes of tar structure (header, padding, long-name records) allowed per entry on top of
/// file contents, so the decompressed stream as a whole is bounded too.
pub(crate) const TAR_OVERHEAD_PER_ENTRY_BYTES: u64 = 16 * 1024;

/// Modification time written into every entry of a built package (deterministic builds).
const PACKAGE_MTIME: u64 = 0;
/// Mode of an executable file in a package.
pub(crate) const EXECUTABLE_MODE: u32 = 0o755;
/// Mode of any other file in a package.
const FILE_MODE: u32 = 0o644;
/// The only permission bits an unpacked file keeps (no setuid, setgid, sticky or
/// group/other write).
pub(crate) const UNPACKED_MODE_MASK: u32 = 0o755;
/// gzip level for `.tar.gz` (fixed, so the same inputs give the same bytes).
const GZIP_LEVEL: u32 = 6;
/// zstd level for `.tar.zst` (fixed, so the same inputs give the same bytes).
const ZSTD_LEVEL: i32 = 3;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a package is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// gzip (`.tar.gz`, `.tgz`).
    TarGz,
    /// zstd (`.tar.zst`).
    TarZst,
}

impl Format {
    /// The format [`build_package`] writes for an output file name.
    pub fn from_file_name(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Self::TarGz)
        } else if name.ends_with(".tar.zst") {
            Some(Self::TarZst)
        } else {
            None
        }
    }

    /// The format of a package from its first bytes, as [`unpack`] detects it.
    pub fn from_magic(first_bytes: &[u8]) -> Option<Self> {
        if first_bytes.starts_with(&ZSTD_MAGIC) {
            Some(Self::TarZst)
        } else if first_bytes.starts_with(&GZIP_MAGIC) {
            Some(Self::TarGz)
        } else {
            None
        }
    }
}

/// `manifest.json`: the release's version, a free-form build description, and the
/// SHA-256 (lowercase hex) of every other file of the package by its path in the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: ReplicaVersion,
    pub build: String,
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest's JSON (keys in a fixed order, files sorted), as packages hold it.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing strings and a BTreeMap cannot fail; an empty manifest would be
        // refused by unpack, never silently accepted.
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        json
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A package file whose SHA-256 matched the expected one when it was hashed.
///
/// [`unpack`] takes only this, so nothing is unpacked before its hash was checked. The
/// two ways to make one are [`crate::Downloader::fetch`] and [`VerifiedPackage::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPackage {
    path: PathBuf,
    sha256: String,
}

impl VerifiedPackage {
    /// Hashes the file at `path` and returns it as verified if its SHA-256 is
    /// `expected_sha256` (hex, either case).
    pub fn verify(path: &Path, expected_sha256: &str) -> Result<Self, ReleaseError> {
        let expected = crate::normalize_sha256(expected_sha256).ok_or_else(|| {
            ReleaseError::BadExpectedHash {
                given: expected_sha256.to_string(),
            }
        })?;
        let actual = sha256_file(path)?;
        if actual != expected {
            return Err(ReleaseError::PackageHashMismatch {
                path: path.to_path_buf(),
                expected,
                actual,
            });
        }
        Ok(Self::hashed(path.to_path_buf(), actual))
    }

    /// For callers that just computed `sha256` from the file at `path`.
    pub(crate) fn hashed(path: PathBuf, sha256: String) -> Self {
        Self { path, sha256 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The package's SHA-256, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn into_path(self) -> PathBuf {
        self.path
    }
}

/// The bounds [`unpack_with_limits`] enforces; [`unpack`] uses [`UnpackLimits::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// The most entries (files and directories).
    pub max_entries: u64,
    /// The most bytes of file contents, summed over all files.
    pub max_bytes: u64,
}

impl UnpackLimits {
    pub const DEFAULT: Self = Self {
        max_entries: MAX_ENTRIES,
        max_bytes: MAX_UNPACKED_BYTES,
    };
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A path inside a package in canonical form (`a/b/c`: UTF-8, normal components only,
/// `./` dropped), or why it is refused.
pub(crate) fn canonical_entry_path(path: &Path) -> Result<String, &'static str> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or("a name is not UTF-8")?),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` in a path"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    if parts.is_empty() {
        return Err("an empty path");
    }
    Ok(parts.join("/"))
}

/// Writes a package to `out` holding `files` (name in the package, source path) and a
/// manifest, and returns the package's SHA-256 (lowercase hex).
///
/// The format follows `out`'s name ([`Format::from_file_name`]). Names must be canonical
/// relative paths (`bin/replica`), unique, not `manifest.json`, and include
/// `bin/replica` and `bin/orchestrator`. A source file with any execute bit (and each
/// required binary) is stored with mode 0755, any other with 0644. The output is
/// deterministic: entries sorted by name after the manifest, mtime 0, uid and gid 0, no
/// user or group names, fixed compression levels. `out` is written under a temporary
/// name and renamed, so it is either absent or complete.
pub fn build_package(
    out: &Path,
    version: &ReplicaVersion,
    build: &str,
    files: &[(&str, &Path)],
) -> Result<String, ReleaseError> {
    let format = Format::from_file_name(out).ok_or_else(|| ReleaseError::UnknownFormat {
        path: out.to_path_buf(),
        reason: "the name must end in .tar.gz, .tgz or .tar.zst".into(),
    })?;
    let bad = |reason: String| ReleaseError::BadInput {
        package: out.to_path_buf(),
        reason,
    };

    // Validate names; hash and stat every source (the manifest comes first).
    let mut sources: BTreeMap<String, (&Path, u64, u32)> = BTreeMap::new();
    let mut listed = BTreeMap::new();
    for &(name, source) in files {
        match canonical_entry_path(Path::new(name)) {
            Ok(canonical) if canonical == name => {}
            Ok(_) => return Err(bad(format!("{name:?} is not in canonical form (a/b/c)"))),
            Err(reason) => return Err(bad(format!("{name:?}: {reason}"))),
        }
        if name == MANIFEST_NAME {
            return Err(bad(format!("{MANIFEST_NAME} is written by build_package")));
        }
        let meta = fs::metadata(source).map_err(|e| ReleaseError::io("stat", source, e))?;
        if !meta.is_file() {
            return Err(bad(format!("{} is not a regular file", source.display())));
        }
        let executable =
            meta.permissions().mode() & 0o111 != 0 || REQUIRED_BINARIES.contains(&name);
        let mode = if executable {
            EXECUTABLE_MODE
        } else {
            FILE_MODE
        };
        if sources
            .insert(name.to_string(), (source, meta.len(), mode))
            .is_some()
        {
            return Err(bad(format!("{name} is given twice")));
        }
        listed.insert(name.to_string(), sha256_file(source)?);
    }
    for required in REQUIRED_BINARIES {
        if !sources.contains_key(required) {
            return Err(bad(format!("{required} is required")));
        }
    }
    let manifest = Manifest {
        version: version.clone(),
        build: build.to_string(),
        files: listed,
    };

    // Durable: written under a temporary name, synced and renamed, so `out` is either
    // absent or complete.
    let mut refused = None;
    let written = durable::write_with(out, FILE_MODE, |file| {
        write_package(file, format, &manifest, &sources).map_err(|e| {
            let shown = io::Error::other(e.to_string());
            refused = Some(e);
            shown
        })
    });
    let sha256 = written.map_err(|e| refused.unwrap_or_else(|| ReleaseError::durable(e)))?;
    tracing::info!(package = %out.display(), %version, %sha256, files = files.len(), "built release package");
    Ok(sha256)
}

fn write_package(
    file: &mut fs::File,
    format: Format,
    manifest: &Manifest,
    sources: &BTreeMap<String, (&Path, u64, u32)>,
) -> Result<String, ReleaseError> {
    let out = Path::new("the package");
    let io_err = |e| ReleaseError::io("write", out, e);
    let writer = HashingWriter::new(file);
    let writer = match format {
        Format::TarGz => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(writer, flate2::Compression::new(GZIP_LEVEL));
            let gz = append_entries(tar::Builder::new(gz), manifest, sources, out)?;
            gz.finish().map_err(io_err)?
        }
        Format::TarZst => {
            let zst = zstd::stream::write::Encoder::new(writer, ZSTD_LEVEL).map_err(io_err)?;
            let zst = append_entries(tar::Builder::new(zst), manifest, sources, out)?;
            zst.finish().map_err(io_err)?
        }
    };
    let (_, sha256) = writer.finish();
    Ok(sha256)
}

/// Appends the manifest and then every file, and returns the compressor.
fn append_entries<W: Write>(
    mut builder: tar::Builder<W>,
    manifest: &Manifest,
    sources: &BTreeMap<String, (&Path, u64, u32)>,
    tmp: &Path,
) -> Result<W, ReleaseError> {
    let io_err = |e| ReleaseError::io("write", tmp, e);
    let json = manifest.to_json();
    builder
        .append_data(
            &mut header(json.len() as u64, FILE_MODE),
            MANIFEST_NAME,
            &json[..],
        )
        .map_err(io_err)?;
    for (name, &(source, size, mode)) in sources {
        let file = fs::File::open(source).map_err(|e| ReleaseError::io("open", source, e))?;
        let mut reader = HashingReader::new(file.take(size));
        builder
            .append_data(&mut header(size, mode), name, &mut reader)
            .map_err(|e| ReleaseError::io("read", source, e))?;
        // The manifest was written from a first read; a file that changed since would
        // make a package that unpack refuses, so refuse it here.
        if reader.finish() != manifest.files.get(name).map(String::as_str).unwrap_or("") {
            return Err(ReleaseError::BadInput {
                package: tmp.to_path_buf(),
                reason: format!("{} changed while the package was built", source.display()),
            });
        }
    }
    builder.into_inner().map_err(io_err)
}

fn header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(PACKAGE_MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = canonical_entry_path(Path::new(input));
        assert_eq!(got.as_deref().map_err(|e| *e), expected, "input {input:?}");
    }

    #[test]
    fn entry_paths_table() {
        check("bin/replica", Ok("bin/replica"));
        check("./bin/replica", Ok("bin/replica"));
        check("bin//replica/", Ok("bin/replica"));
        check("../x", Err("`..` in a path"));
        check("bin/../../x", Err("`..` in a path"));
        check("/etc/passwd", Err("an absolute path"));
        check(".", Err("an empty path"));
        check("", Err("an empty path"));
    }

    #[test]
    fn formats_by_name_and_by_magic() {
        assert_eq!(
            Format::from_file_name(Path::new("x/r.tar.gz")),
            Some(Format::TarGz)
        );
        assert_eq!(
            Format::from_file_name(Path::new("r.tgz")),
            Some(Format::TarGz)
        );
        assert_eq!(
            Format::from_file_name(Path::new("r.tar.zst")),
            Some(Format::TarZst)
        );
        assert_eq!(Format::from_file_name(Path::new("r.tar")), None);
        assert_eq!(Format::from_magic(&[0x1f, 0x8b, 8, 0]), Some(Format::TarGz));
        assert_eq!(Format::from_magic(&ZSTD_MAGIC), Some(Format::TarZst));
        assert_eq!(Format::from_magic(b"ustar"), None);
        assert_eq!(Format::from_magic(&[]), None);
    }
}
