//! The `replica-next` binary is the next release, and the `replica` binary beside it the
//! first: `--describe` tells them apart by release, state schema, wire protocol and
//! methods. (This test is also what makes `cargo test` build the `replica-next` binary,
//! which `testnet package --next-release` packages.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::process::Command;

fn describe(bin: &std::path::Path) -> Value {
    let out = Command::new(bin).arg("--describe").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_next_release_describes_itself_and_differs_from_the_first() {
    let next_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_replica-next"));
    let next = describe(&next_bin);
    assert_eq!(next["release"], "next", "{next}");
    assert_eq!(next["state_schema"], 2, "{next}");
    assert_eq!(next["wire_protocol"], "icup-consensus/2", "{next}");
    assert_eq!(
        next["methods"],
        serde_json::json!(["put", "delete", "append"]),
        "{next}"
    );
    // The first release sits beside it when the workspace is built together.
    let first_bin = next_bin.with_file_name("replica");
    if first_bin.exists() {
        let first = describe(&first_bin);
        assert_eq!(first["release"], "first", "{first}");
        assert_eq!(first["state_schema"], 1, "{first}");
        assert_eq!(first["wire_protocol"], "icup-consensus/1", "{first}");
        assert_eq!(first["methods"], serde_json::json!(["put", "delete"]));
    }
}
