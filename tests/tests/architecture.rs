//! Architecture invariants that a code review could miss.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

/// The protocol cores must not depend on anything that does I/O or keeps time:
/// consensus and cup are driven by their callers (STYLE.md, ARCHITECTURE.md).
#[test]
fn protocol_cores_have_no_io_dependencies() {
    for krate in ["consensus", "cup", "types", "crypto", "simulator"] {
        let out = Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "--locked",
                "-e",
                "normal",
                "--prefix",
                "none",
                "-p",
                krate,
            ])
            .current_dir(tests::workspace_root())
            .output()
            .expect("run cargo tree");
        assert!(
            out.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(tree.lines().count() > 1, "{krate}: empty tree?\n{tree}");
        for forbidden in ["tokio ", "quinn ", "rocksdb ", "hyper ", "reqwest "] {
            assert!(
                !tree.lines().any(|l| l.starts_with(forbidden)),
                "{krate} depends on {forbidden}:\n{tree}"
            );
        }
    }
}

/// The check above is not vacuous: the replica does depend on tokio.
#[test]
fn the_io_check_detects_tokio_where_it_is() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            "replica",
        ])
        .current_dir(tests::workspace_root())
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().any(|l| l.starts_with("tokio ")), "{tree}");
}

/// The simulator's signature stand-in can never be built into a replica.
#[test]
fn no_replica_or_orchestrator_depends_on_the_simulator() {
    for krate in ["replica", "orchestrator", "registry"] {
        let out = Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "--locked",
                "-e",
                "normal",
                "--prefix",
                "none",
                "-p",
                krate,
            ])
            .current_dir(tests::workspace_root())
            .output()
            .expect("run cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(
            !tree.lines().any(|l| l.starts_with("simulator ")),
            "{krate} depends on the simulator:\n{tree}"
        );
    }
}
