//! Secret keys on disk: one line of lowercase hex, file mode 0600.
//!
//! Reading refuses a file that group or others can read, with a message that says how to
//! fix it, and refuses anything that is not exactly the expected number of hex bytes.
//! Writing goes through [`durable::write_secret`] (a temporary file created with mode
//! 0600, fsync, rename, fsync of the directory), so a crash never leaves a half-written or
//! briefly world-readable key, and a written key survives a power cut.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// A key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} has permissions {mode:04o}; a secret key must be readable by its owner \
         only (run: chmod 600 {path})"
    )]
    WrongPermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// Writes `secret` as hex to `path` with mode 0600, atomically and durably
/// ([`durable::write_secret`]: never half-written, never readable by others).
pub fn write(path: &Path, secret: &[u8]) -> Result<(), KeyFileError> {
    durable::write_secret(path, format!("{}\n", hex::encode(secret)).as_bytes()).map_err(|e| {
        KeyFileError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }
    })
}

/// Reads a key of exactly `expected_len` bytes from `path`.
pub fn read(path: &Path, expected_len: usize) -> Result<Vec<u8>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::WrongPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > 4096 {
        return Err(KeyFileError::Malformed {
            path: path.to_path_buf(),
            reason: format!("{} bytes is far too large for a key", meta.len()),
        });
    }
    let text = fs::read_to_string(path).map_err(|e| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason: format!("not text: {e}"),
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let malformed = |reason: String| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = hex::decode(text).map_err(|e| malformed(format!("not hexadecimal ({e})")))?;
    if bytes.len() != expected_len {
        return Err(malformed(format!(
            "expected {expected_len} bytes ({} hex characters), found {}",
            expected_len * 2,
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write, os::unix::fs::OpenOptionsExt};

    #[test]
    fn write_then_read_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        write(&path, &[7; 32]).expect("write");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path, 32).expect("read"), vec![7; 32]);
    }

    #[test]
    fn refuses_group_or_world_readable_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        write(&path, &[7; 32]).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read(&path, 32).expect_err("must refuse");
        assert!(
            matches!(err, KeyFileError::WrongPermissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn refuses_malformed_contents_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        for (contents, reason) in [
            ("zz\n", "not hexadecimal"),
            ("abcd\n", "expected 32 bytes"),
            ("", "expected 32 bytes"),
        ] {
            let _ = fs::remove_file(&path);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(contents.as_bytes()))
                .expect("write");
            let err = read(&path, 32).expect_err("must refuse");
            assert!(err.to_string().contains(reason), "{contents:?}: {err}");
        }
        assert!(matches!(
            read(&dir.path().join("absent"), 32),
            Err(KeyFileError::Io { .. })
        ));
    }
}
