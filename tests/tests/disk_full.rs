//! A node whose disk fills up stops executing with a clear error (and signs nothing it
//! could not persist), the subnet goes on without it, and when space returns the node
//! resumes and catches up, losing nothing: every write acknowledged before, during and
//! after is on every node.
//!
//! Node 3's replica directory is a small tmpfs that the test fills with a file; this
//! needs root (to mount), which CI has. Before, a failed write ended the replica, and the
//! orchestrator restarted it into the same failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tests::testnet::{Net, nodes};

/// A tmpfs mounted over a directory (its contents copied in), unmounted when dropped.
struct Tmpfs {
    at: PathBuf,
    /// Stops the filler of [`Tmpfs::keep_full`]: once unmounted, its path is on the real
    /// disk, which a test that fails half-way must not fill.
    stop: Arc<AtomicBool>,
}

impl Tmpfs {
    fn over(dir: &Path, size_mib: u64) -> Self {
        let saved = dir.with_extension("saved");
        std::fs::rename(dir, &saved).unwrap();
        std::fs::create_dir(dir).unwrap();
        let size = format!("size={size_mib}m");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs on {}", dir.display());
        let ok = Command::new("cp")
            .arg("-a")
            .arg(saved.join("."))
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        Self {
            at: dir.to_path_buf(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Keeps the disk full until the returned flag is set: one file takes whatever
    /// space appears (a disk that stays full, not one that fills once).
    fn keep_full(&self) -> (PathBuf, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let filler = self.at.join("filler");
        let stop = self.stop.clone();
        let (f, s) = (filler.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = Command::new("dd")
                    .arg("if=/dev/zero")
                    .arg(format!("of={}", f.display()))
                    .args(["bs=4k", "oflag=append", "conv=notrunc", "status=none"])
                    .stderr(std::process::Stdio::null())
                    .status();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        (filler, stop, thread)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The filler's last `dd` (at most one) ends before the disk goes.
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[test]
fn a_node_whose_disk_fills_stops_cleanly_and_resumes_losing_nothing() {
    if !tests::testnet::is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let bin = tests::binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Net::new(&bin, &dir);
    let d = net.d.clone();
    net.prep_up(4);
    let s = net.status();
    let url3 = nodes(&s)[3]["replica_url"].as_str().unwrap().to_string();
    let orch3 = nodes(&s)[3]["orchestrator_url"]
        .as_str()
        .unwrap()
        .to_string();
    let status3 = || net.replica_status(&url3);
    let replica_pid3 = || {
        net.get(format!("{orch3}/status"))
            .and_then(|s| s["replica_pid"].as_u64())
    };

    // Node 3's replica keeps its state, checkpoints and shares on a 64 MiB tmpfs.
    let stopped: Value =
        serde_json::from_str(&net.run(&["stop-node", "--dir", &d, "--node", "3", "--json"]))
            .unwrap();
    assert_eq!(stopped["stopped"], true, "{stopped}");
    let disk = Tmpfs::over(&dir.join("nodes/node-3/replica"), 64);
    let started: Value =
        serde_json::from_str(&net.run(&["start-node", "--dir", &d, "--node", "3", "--json"]))
            .unwrap();
    assert_eq!(started["node"], 3, "{started}");
    net.wait("node 3 back", |_| {
        status3().is_some_and(|s| s.finalized_height > 3)
    });

    let writes = tmp.path().join("writes.jsonl");
    let mut load: Child = Command::new(&net.testnet)
        .args(["load", "--dir", &d, "--rate", "20", "--duration", "600"])
        .arg("--out")
        .arg(&writes)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));

    // The disk fills and stays full: node 3 stops at a write that finds no space (a
    // checkpoint every ten heights, the log), says why, and the others go on.
    let pid = replica_pid3().expect("node 3's replica runs");
    let (filler, space_returns, filling) = disk.keep_full();
    net.wait("node 3 to report its storage error", |_| {
        status3().is_some_and(|s| s.storage_error.is_some())
    });
    let reason = status3().and_then(|s| s.storage_error).unwrap();
    assert!(
        reason.contains("No space left") || reason.contains("os error 28"),
        "{reason}"
    );
    let others = |s: &Value| {
        nodes(s)[..3]
            .iter()
            .map(|n| n["finalized_height"].as_u64().unwrap_or(0))
            .min()
            .unwrap_or(0)
    };
    let before = others(&net.status());
    let mine_before = status3().map_or(0, |s| s.executed_height);
    let s = net.wait("the others to go on", |s| others(s) > before + 30);
    // Node 3 stays behind while its disk is full. It executes up to the next write that
    // finds no space (a checkpoint every ten heights; space the filler has not yet taken
    // back lets a retry through), so it may go on for a checkpoint interval or two after
    // its first error, but no further: two runs stopped it exactly 20 behind.
    let mine = status3()
        .expect("node 3's replica answers while its disk is full")
        .executed_height;
    assert!(
        mine + 10 < others(&s),
        "node 3 kept up with a full disk: it executed {mine_before} -> {mine} while the others finalized {before} -> {}",
        others(&s)
    );
    // Its replica did not crash (no restart loop): still the same process, still answering
    // (a peer's CUP far ahead waits for space too: catching up writes a whole state).
    assert!(status3().is_some(), "node 3's replica stopped answering");
    assert_eq!(replica_pid3(), Some(pid), "node 3's replica was restarted");

    // Space returns: node 3 resumes and catches up with the others.
    space_returns.store(true, Ordering::Relaxed);
    filling.join().unwrap();
    std::fs::remove_file(&filler).unwrap();
    let seen = std::cell::RefCell::new(None);
    let caught_up = |s: &Value| {
        let me = status3();
        let done = me
            .as_ref()
            .is_some_and(|me| me.storage_error.is_none() && me.executed_height + 5 >= others(s));
        *seen.borrow_mut() = me;
        done
    };
    let start = std::time::Instant::now();
    while !caught_up(&net.status()) {
        assert!(
            start.elapsed() < tests::testnet::PATIENCE,
            "node 3 did not resume and catch up: {:?}",
            seen.borrow()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(replica_pid3(), Some(pid), "node 3's replica was restarted");
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-INT", &load.id().to_string()])
        .status();
    assert!(load.wait().unwrap().success());
    // Every acknowledged write, on every node, node 3 included.
    let report = net.run(&[
        "verify",
        "--dir",
        &d,
        "--writes",
        writes.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&report).unwrap();
    assert!(v["writes"].as_u64() > Some(50), "{report}");
    assert_eq!(v["lost"].as_array().map(Vec::len), Some(0), "{report}");
    drop(net);
    drop(disk);
}
