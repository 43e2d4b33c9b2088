//! The `dashboard` command line: bad input gets a one-line reason and exit code 2. (Its
//! end-to-end run, in a real browser, is `tests/tests/dashboard.rs`; this test also makes
//! `cargo test` build the binary that test and `testnet up` start.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn a_bad_registry_url_or_key_is_refused_with_a_reason() {
    for (args, why) in [
        (
            vec!["--registry", "ftp://x", "--listen", "127.0.0.1:0"],
            "http",
        ),
        (
            vec![
                "--registry",
                "http://127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
                "--registry-key",
                "not hex",
            ],
            "key",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dashboard"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.to_lowercase().contains(why), "{args:?}: {err}");
    }
}
