//! Architecture invariants that a code review could miss.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

/// `cargo tree` of one crate's normal dependencies, one crate per line.
fn tree(krate: &str) -> String {
    tree_with(krate, &[])
}

/// The same, built without the crate's default features (its pure core).
fn tree_without_default_features(krate: &str) -> String {
    tree_with(krate, &["--no-default-features"])
}

fn tree_with(krate: &str, extra: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(cargo)
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
        .args(extra)
        .current_dir(tests::workspace_root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {krate} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn depends_on(tree: &str, krate: &str) -> bool {
    tree.lines().any(|l| l.starts_with(&format!("{krate} ")))
}

/// The protocol cores must not depend on anything that does I/O or keeps time:
/// they are driven by their callers (STYLE.md, ARCHITECTURE.md).
#[test]
fn protocol_cores_have_no_io_dependencies() {
    for krate in [
        "consensus",
        "cup",
        "types",
        "crypto",
        "state-tree",
        "ingress",
        "certification",
        "simulator",
    ] {
        check_no_io(krate, &tree(krate));
    }
    // The registry's and the orchestrator's pure cores (what the simulator builds on).
    for krate in ["registry", "orchestrator"] {
        check_no_io(krate, &tree_without_default_features(krate));
    }
}

fn check_no_io(krate: &str, t: &str) {
    assert!(t.lines().count() > 1, "{krate}: empty tree?\n{t}");
    for forbidden in ["tokio", "quinn", "rocksdb", "hyper", "reqwest"] {
        assert!(
            !depends_on(t, forbidden),
            "{krate} depends on {forbidden}:\n{t}"
        );
    }
}

/// The check above is not vacuous: the replica does depend on tokio.
#[test]
fn the_io_check_detects_tokio_where_it_is() {
    assert!(depends_on(&tree("replica"), "tokio"));
    // And the default features of the registry and orchestrator do the I/O.
    assert!(depends_on(&tree("registry"), "rocksdb"));
    assert!(depends_on(&tree("orchestrator"), "tokio"));
}

/// The transport builds without RocksDB and knows nothing of the registry or the replica
/// (they use it, not the reverse); its TLS runs on ring only, never aws-lc (ARCHITECTURE.md).
#[test]
fn the_transport_is_light_and_its_tls_uses_ring_only() {
    let t = tree("transport");
    for forbidden in [
        "rocksdb",
        "registry",
        "replica",
        "simulator",
        "aws-lc-rs",
        "aws-lc-sys",
    ] {
        assert!(
            !depends_on(&t, forbidden),
            "transport depends on {forbidden}:\n{t}"
        );
    }
    // And the check can see what is there.
    assert!(depends_on(&t, "quinn") && depends_on(&t, "ring"), "{t}");
    // The replica uses quinn too; the workspace declaration keeps aws-lc out there as well.
    let r = tree("replica");
    assert!(!depends_on(&r, "aws-lc-rs"), "replica builds aws-lc:\n{r}");
}

/// Release packages build without RocksDB and know nothing of the registry, the replica
/// or the orchestrator: the orchestrator uses them, not the reverse (ARCHITECTURE.md).
#[test]
fn release_packages_are_light() {
    let t = tree("release");
    for forbidden in [
        "rocksdb",
        "registry",
        "replica",
        "orchestrator",
        "simulator",
    ] {
        assert!(
            !depends_on(&t, forbidden),
            "release depends on {forbidden}:\n{t}"
        );
    }
    // And the check can see what is there.
    assert!(depends_on(&t, "tar") && depends_on(&t, "reqwest"), "{t}");
}

/// The simulator's signature stand-in can never be built into a replica.
#[test]
fn no_replica_or_orchestrator_depends_on_the_simulator() {
    for krate in ["replica", "replica-next", "orchestrator", "registry"] {
        let t = tree(krate);
        assert!(
            !depends_on(&t, "simulator"),
            "{krate} depends on the simulator:\n{t}"
        );
    }
    // And the check can see the simulator where it is.
    assert!(depends_on(&tree("simulator"), "consensus"));
}

/// The crates that fetch over https build rustls on ring only, never aws-lc.
#[test]
fn https_clients_use_ring_only() {
    for krate in ["release", "orchestrator", "registry"] {
        let t = tree(krate);
        for forbidden in ["aws-lc-rs", "aws-lc-sys"] {
            assert!(
                !depends_on(&t, forbidden),
                "{krate} depends on {forbidden}:\n{t}"
            );
        }
        // And the check can see what is there: TLS, on ring.
        assert!(
            depends_on(&t, "rustls") && depends_on(&t, "ring"),
            "{krate}:\n{t}"
        );
    }
}

/// Sources the check skips (none today: RocksDB syncs the files inside its directories,
/// and the renames of whole RocksDB directories go through `durable::rename` too).
const PERSIST_EXEMPT: &[&str] = &[];

/// Every persist goes through the one durable-write helper (`durable`: temporary file,
/// fsync, rename, fsync of the directory): a hand-written `sync_all` or `rename` in a
/// crate's sources is a persist that may skip a step. A line may opt out with a
/// `// durable:` comment right above it that says why.
#[test]
fn every_persist_goes_through_the_durable_helper() {
    let root = tests::workspace_root();
    let mut offenders = Vec::new();
    let mut scanned = 0;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let skip = name.starts_with('.')
                    || name == "target"
                    || rel == "durable"
                    || rel == "tests"
                    || name == "tests"
                    || name == "benches";
                if !skip {
                    stack.push(path);
                }
                continue;
            }
            if !rel.contains("/src/") || !name.ends_with(".rs") {
                continue;
            }
            if PERSIST_EXEMPT.iter().any(|e| rel.starts_with(e)) {
                continue;
            }
            scanned += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                let code = line.split("//").next().unwrap_or("");
                let persists = code.contains(".sync_all()") || code.contains("fs::rename(");
                let excused = lines[i.saturating_sub(3)..i]
                    .iter()
                    .any(|l| l.contains("// durable:"));
                if persists && !excused && !code.contains("durable::") {
                    offenders.push(format!("{rel}:{}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        scanned > 50,
        "scanned only {scanned} files under {}",
        root.display()
    );
    assert!(
        offenders.is_empty(),
        "hand-written persists (use durable::write/write_with/rename):\n{}",
        offenders.join("\n")
    );
}
