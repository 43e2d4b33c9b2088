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

/// A loopback port where nothing listens now, TCP or UDP (for processes that need their
/// addresses written into a genesis before they start). It comes from below the kernel's
/// ephemeral range: a port the kernel hands out (binding port 0) can be taken by any
/// process's outgoing connection between this call and the process binding it, and tests
/// run in parallel with many connections open. Never the same port twice in one process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // Testnets pick their bases from 10,000 up to the ephemeral range; these ports sit
    // in a band of their own below that.
    const LOW: u64 = 2_000;
    const HIGH: u64 = 10_000;
    let seed = u64::from(std::process::id())
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0),
        )
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(7_919));
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for step in 0..(HIGH - LOW) {
        let port = (LOW + (seed.wrapping_add(step.wrapping_mul(7_919))) % (HIGH - LOW)) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {HIGH}");
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

/// Runs `promtool check metrics` (Debian's `prometheus` package, which
/// `scripts/install-deps.sh` installs) on a `/metrics` answer: `Ok`, or promtool's
/// complaint. A machine without promtool fails the check rather than skip it.
pub fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e} (scripts/install-deps.sh installs it)"))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(text.as_bytes()))
        .unwrap_or(Ok(()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match (out.status.success(), written) {
        (true, Ok(())) => Ok(()),
        (true, Err(e)) => Err(format!("writing to promtool: {e}")),
        (false, _) => Err(format!("promtool check metrics ({}): {said}", out.status)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn promtool_accepts_conventional_metrics_and_rejects_a_planted_bad_name() {
        let good = "# HELP x_last_switch_timestamp_seconds When.\n\
                    # TYPE x_last_switch_timestamp_seconds gauge\n\
                    x_last_switch_timestamp_seconds 1.7e9\n\
                    # HELP x_restarts_total Restarts.\n\
                    # TYPE x_restarts_total counter\n\
                    x_restarts_total 2\n";
        assert_eq!(super::promtool_check(good), Ok(()));
        // What the orchestrator served before its metrics moved to the prometheus crate.
        let bad = "# HELP orchestrator_last_switch_unix_ms When.\n\
                   # TYPE orchestrator_last_switch_unix_ms gauge\n\
                   orchestrator_last_switch_unix_ms 0\n";
        let e = super::promtool_check(bad).expect_err("an abbreviated unit");
        assert!(e.contains("abbreviated units"), "{e}");
        // A counter without `_total`.
        let bad = "# HELP x_restarts Restarts.\n# TYPE x_restarts counter\nx_restarts 2\n";
        assert!(super::promtool_check(bad).is_err());
    }
}
