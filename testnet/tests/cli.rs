//! The `testnet` command line: bad input gets a one-line reason and changes nothing.
//! (Its end-to-end runs are in `tests/tests/testnet.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn testnet(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_testnet"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_refused_with_a_reason_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let d = dir.to_str().unwrap();
    let (ok, err) = testnet(&["prep", "--dir", d, "--nodes", "0"]);
    assert!(
        !ok && err.contains("--nodes must be between 1 and 40"),
        "{err}"
    );
    let (ok, err) = testnet(&["prep", "--dir", d, "--base-port", "65530"]);
    assert!(!ok && err.contains("--base-port"), "{err}");
    assert!(!dir.exists(), "a refused prep wrote {}", dir.display());
    for cmd in ["up", "status", "down"] {
        let (ok, err) = testnet(&[cmd, "--dir", d]);
        assert!(
            !ok && err.contains("run testnet prep first"),
            "{cmd}: {err}"
        );
    }
    let (ok, err) = testnet(&["package", "--version", "no spaces", "--out", d]);
    assert!(!ok && err.contains("--version"), "{err}");
}
