//! The benchmark command runs end to end at toy sizes, and `--write` replaces only the
//! marked part of a file. No figure is judged: these machines are shared and noisy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bench");

#[test]
fn every_measurement_runs_at_tiny_sizes_and_write_keeps_the_rest_of_the_file() {
    let out = Command::new(BIN)
        .args(["--tiny", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let figures = v["figures"].as_array().unwrap();
    assert!(figures.len() >= 9, "{v}");
    for f in figures {
        let value = f["value"].as_f64().unwrap();
        assert!(value.is_finite() && value > 0.0, "{f}");
        if let Some(limit) = f["limit_value"].as_f64() {
            let ratio = f["ratio"].as_f64().unwrap();
            assert!(
                (ratio - value / limit).abs() < 1e-9 * ratio.abs().max(1.0),
                "{f}"
            );
        }
    }
    assert!(
        figures.iter().any(|f| f["ratio"].is_number()),
        "some figure stands against a limit: {v}"
    );

    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("BENCHMARKS.md");
    std::fs::write(
        &doc,
        "# Before\n<!-- bench:start -->\nold table\n<!-- bench:end -->\n# After\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--tiny", "--write"])
        .arg(&doc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(
        text.starts_with("# Before\n<!-- bench:start -->\nMachine: "),
        "{text}"
    );
    assert!(text.ends_with("<!-- bench:end -->\n# After\n"), "{text}");
    assert!(!text.contains("old table"), "{text}");
    assert!(text.contains("| CUP decode and verification"), "{text}");
}
