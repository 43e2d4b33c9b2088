//! End-to-end tests that start real processes on loopback live in `tests/tests/`.
//! This library holds what they share.

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // Read at run time: a target directory shared between clones can hold this library
    // built in another clone, whose compile-time path may be gone.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for processes that need their
/// addresses written into a genesis before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Builds the workspace's binaries and returns their directory. The same command as the
/// workspace's test run, so features unify the same way and, under
/// `cargo test --workspace`, nothing is rebuilt.
pub fn binaries() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["test", "--workspace", "--locked", "--no-run"])
        .current_dir(workspace_root())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "building the workspace's binaries failed"
    );
    // Tests run from <target>/debug/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."))
}
