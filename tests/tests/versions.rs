//! Every binary of the workspace answers `--version`; the replica's `--version V` keeps
//! selecting the version to run, and `--program-version` prints the program's. Run from
//! an unpacked release image, the replica and the orchestrator also name the replica
//! version of that image.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, process::Command};
use types::ReplicaVersion;

/// Runs `bin args`: exit code, stdout, stderr.
fn run(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The workspace's binaries, by the sources that define them (`*/src/main.rs` is named
/// after its package's directory, `*/src/bin/X.rs` is `X`): a binary added later is
/// covered without editing this test.
fn binary_names() -> Vec<String> {
    let root = tests::workspace_root();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("src/main.rs").is_file() {
            names.push(dir.file_name().unwrap().to_string_lossy().into_owned());
        }
        if let Ok(bins) = std::fs::read_dir(dir.join("src/bin")) {
            for b in bins {
                let p = b.unwrap().path();
                if p.extension().is_some_and(|e| e == "rs") {
                    names.push(p.file_stem().unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    names.sort();
    names
}

#[test]
fn every_binary_answers_version() {
    let bin = tests::binaries();
    let names = binary_names();
    assert!(names.len() >= 9, "{names:?}");
    let crate_version = env!("CARGO_PKG_VERSION");
    for name in &names {
        let flag = if name.starts_with("replica") {
            "--program-version"
        } else {
            "--version"
        };
        // The next release is the replica program too (a package installs it as
        // `bin/replica`); its version line says which release it is.
        let program = if name == "replica-next" {
            "replica"
        } else {
            name
        };
        let (code, out, err) = run(&bin.join(name), &[flag]);
        assert_eq!(code, 0, "{name} {flag}: {err}");
        assert!(
            out.starts_with(&format!("{program} {crate_version}")),
            "{name} {flag}: {out}"
        );
    }
    // The replica says which release it was built as.
    let (_, out, _) = run(&bin.join("replica"), &["-V"]);
    assert!(out.contains("release first, state schema 1"), "{out}");
    let (_, out, _) = run(&bin.join("replica-next"), &["--program-version"]);
    assert!(out.contains("release next, state schema 2"), "{out}");
    // `--version V` still selects the version to run: alone it is an incomplete start
    // (a usage error), not a request to print anything.
    let (code, out, err) = run(&bin.join("replica"), &["--version", "1.0.0"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("--node-dir"), "{err}");
    let (_, help, _) = run(&bin.join("replica"), &["--help"]);
    assert!(help.contains("--program-version"), "{help}");
}

#[test]
fn binaries_in_a_release_image_name_its_replica_version() {
    let bin = tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("bin/replica", bin.join("replica")),
        ("bin/orchestrator", bin.join("orchestrator")),
    ];
    let files: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let version = ReplicaVersion::new("9.8.7").unwrap();
    let package = dir.path().join("9.8.7.tar.zst");
    let sha = release::build_package(&package, &version, "versions test", &files).unwrap();
    let images = dir.path().join("images");
    let verified = release::VerifiedPackage::verify(&package, &sha).unwrap();
    release::unpack(&verified, &version, &images).unwrap();
    let image = images.join(&sha);
    let (code, out, err) = run(&image.join("bin/replica"), &["--program-version"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("image of replica version 9.8.7"), "{out}");
    let (code, out, err) = run(&image.join("bin/orchestrator"), &["--version"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("image of replica version 9.8.7, build \"versions test\""),
        "{out}"
    );
}
