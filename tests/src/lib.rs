//! End-to-end tests that start real processes on loopback live in `tests/tests/`.
//! This library holds what they share.

use std::path::PathBuf;

pub mod testnet;

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
    let mut build = std::process::Command::new(cargo);
    build
        .args(["test", "--workspace", "--locked", "--no-run"])
        .current_dir(workspace_root());
    // A test runs with its own package's variables (CARGO_PKG_NAME, CARGO_MANIFEST_DIR,
    // ...). Build scripts that watch them (ring's does) would see a change, so this
    // build would redo ring, rustls, quinn and all above them, and the next plain build
    // would redo them again.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_for_tests = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_tests {
            build.env_remove(key);
        }
    }
    let status = build.status();
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

/// Whether process `pid` exists and has not exited (a zombie, exited and not yet reaped
/// by whoever inherited it, counts as exited).
pub fn process_runs(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        st.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}
