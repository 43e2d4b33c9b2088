//! The one way this workspace persists a file that must survive a crash.
//!
//! [`write`] (and [`write_secret`] for key files) puts the bytes in a new temporary file
//! in the target's own directory, fsyncs that file, renames it over the target and then
//! fsyncs the directory. At any instant of a crash a reader finds either the old file
//! whole or the new file whole, and once the call returned the new file survives a power
//! cut (the directory entry is on disk, not only in the page cache). [`rename`] is the
//! same last two steps for a file or directory written some other way.
//!
//! Rules:
//! - The temporary file is `.<name>.tmp-<pid>-<n>` beside the target: the same file
//!   system (rename is atomic only there), and never the name of another writer's file.
//! - It is created with `create_new` and the final mode (0600 for secrets), so a secret
//!   is never readable by others, not even for an instant, and a stale temporary file of
//!   a crashed writer is never written through.
//! - On any error the temporary file is removed and the target is untouched.
//! - [`remove_stale`] clears temporary files a crashed writer left in a directory.
//!
//! And the one way it reads such a file back: [`read_bounded`], never more than the
//! caller's limit (a file grown by a bug or an attacker is refused, not held).
//!
//! std only: `crypto` (which must stay free of I/O frameworks) uses it for key files.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// The mode of a file written by [`write`] (before the umask).
pub const FILE_MODE: u32 = 0o644;
/// The mode of a file written by [`write_secret`]: its owner only.
pub const SECRET_MODE: u32 = 0o600;
/// What every temporary file name contains (after the leading `.` and the target's name).
pub const TMP_MARKER: &str = ".tmp-";
/// The most directory entries [`remove_stale`] looks at.
pub const MAX_STALE_SCAN_ENTRIES: usize = 4096;

/// One failed step of a durable write, with the path it was on.
#[derive(Debug)]
pub struct Error {
    pub operation: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.operation,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

fn err<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error {
        operation,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `path` whole if it holds at most `limit` bytes. A longer file is refused
/// (`ErrorKind::FileTooLarge`) having held no more than `limit + 1` of its bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(err("read", path))?;
    if bytes.len() as u64 > limit {
        let too_large = io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {limit} bytes"),
        );
        return Err(err("read", path)(too_large));
    }
    Ok(bytes)
}

/// Replaces `path` with `bytes`, durably and atomically (module docs).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_with_mode(path, bytes, FILE_MODE)
}

/// [`write`] for a secret: the file has mode 0600 from the moment it exists.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_with_mode(path, bytes, SECRET_MODE)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    write_with(path, mode, |file| file.write_all(bytes))
}

/// [`write`] for contents too large to hold in memory: `fill` writes them into the
/// temporary file (mode `mode`), which is then synced and renamed over `path` as
/// [`write`] does. What `fill` returns is passed on (say, a hash of what it wrote).
pub fn write_with<T>(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<T>,
) -> Result<T, Error> {
    let tmp = temporary_name(path)?;
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        let value = fill(&mut file).map_err(err("write", &tmp))?;
        file.sync_all().map_err(err("sync", &tmp))?;
        Ok(value)
    })();
    let value = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(value)
}

/// Renames `from` to `to` (a file or a directory, replacing a file at `to`) and fsyncs
/// the directories involved, so the new name survives a crash once this returns.
pub fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).map_err(err("rename into", to))?;
    let to_dir = parent(to);
    sync_dir(to_dir)?;
    let from_dir = parent(from);
    if from_dir != to_dir {
        sync_dir(from_dir)?;
    }
    Ok(())
}

/// Fsyncs a directory, so entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("sync directory", dir))
}

/// Removes the temporary files that writers killed mid-write left in `dir` (names with
/// [`TMP_MARKER`] after a leading `.`); returns how many. Call it when no writer of this
/// directory runs (at start).
pub fn remove_stale(dir: &Path) -> Result<usize, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err("list", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries.take(MAX_STALE_SCAN_ENTRIES) {
        let entry = entry.map_err(err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') && name.contains(TMP_MARKER) && entry.path().is_file() {
            fs::remove_file(entry.path()).map_err(err("remove", &entry.path()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// The directory holding `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A fresh temporary name beside `path`: `.<name>.tmp-<pid>-<n>`.
fn temporary_name(path: &Path) -> Result<PathBuf, Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| Error {
        operation: "write",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        "{TMP_MARKER}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(parent(path).join(tmp))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_bounded_read_takes_a_file_up_to_its_limit_and_refuses_a_longer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"abcd").unwrap();
        assert_eq!(read_bounded(&path, 4).unwrap(), b"abcd");
        let e = read_bounded(&path, 3).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            e.to_string(),
            format!("read {}: larger than 3 bytes", path.display())
        );
        let missing = read_bounded(&dir.path().join("none"), 3).unwrap_err();
        assert_eq!(missing.source.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_write_replaces_the_whole_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cup.cup");
        write(&path, b"first").unwrap();
        write(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names(dir.path()), ["cup.cup"]);
    }

    #[test]
    fn a_secret_is_owner_only_and_a_plain_file_is_not_group_writable() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("node.key");
        // A world-readable file there before: replaced by a 0600 one, not chmodded later.
        fs::write(&secret, b"old").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&secret, b"k").unwrap();
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SECRET_MODE);
        let plain = dir.path().join("plain");
        write(&plain, b"p").unwrap();
        let mode = fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o022, 0, "{mode:o}");
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"kept").unwrap();
        // The target is a non-empty directory now: the rename fails after the file was
        // written; the temporary file is gone and the target is as it was.
        let blocked = dir.path().join("d");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        let e = write(&blocked, b"new").unwrap_err();
        assert_eq!(e.operation, "rename into", "{e}");
        assert_eq!(names(dir.path()), ["d", "f"]);
        assert_eq!(fs::read(&path).unwrap(), b"kept");
        // A missing directory: refused, with the path in the message.
        let e = write(&dir.path().join("missing/f"), b"x").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn stale_temporary_files_are_never_written_through_and_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // What a writer killed between create and rename leaves.
        let stale = dir.path().join(format!(".f{TMP_MARKER}1-0"));
        fs::write(&stale, b"half").unwrap();
        write(&path, b"whole").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        assert_eq!(remove_stale(dir.path()).unwrap(), 1);
        assert_eq!(names(dir.path()), ["f"]);
        assert_eq!(remove_stale(&dir.path().join("absent")).unwrap(), 0);
    }

    #[test]
    fn a_streamed_write_passes_its_value_on_and_a_failed_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("package.tar.gz");
        let n = write_with(&path, FILE_MODE, |f| f.write_all(b"abc").map(|()| 3)).unwrap();
        assert_eq!((n, fs::read(&path).unwrap()), (3, b"abc".to_vec()));
        let e = write_with(&path, FILE_MODE, |f| {
            f.write_all(b"half")?;
            Err::<(), _>(io::Error::other("the source broke"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("the source broke"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        assert_eq!(names(dir.path()), ["package.tar.gz"]);
    }

    #[test]
    fn rename_moves_directories_too() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join(".tmp-image");
        fs::create_dir(&from).unwrap();
        fs::write(from.join("a"), b"a").unwrap();
        let to = dir.path().join("image");
        rename(&from, &to).unwrap();
        assert_eq!(fs::read(to.join("a")).unwrap(), b"a");
    }
}
