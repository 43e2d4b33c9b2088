//! The replica process: started in its own process group, stopped with SIGTERM to the
//! group and SIGKILL after a grace period, restarted with exponential backoff when it
//! exits on its own. Its pid is kept in `replica.pid` in the node directory, so an
//! orchestrator that died (kill -9, a crash) stops the replica it left behind when it
//! starts again, instead of starting a second one beside it.

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use std::{
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use types::{Height, ReplicaVersion};

/// The first restart delay after a crash; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A replica that ran this long is healthy again: the backoff resets.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub binary: PathBuf,
    pub node_dir: PathBuf,
    pub version: ReplicaVersion,
    pub cup: PathBuf,
    pub cup_height: Height,
}

#[derive(Debug)]
struct Running {
    child: Child,
    launch: Launch,
    started: Instant,
}

#[derive(Debug)]
pub struct Supervisor {
    running: Option<Running>,
    backoff: Duration,
    not_before: Option<Instant>,
    pub restarts: u64,
    pub last_exit: Option<String>,
    grace: Duration,
    /// A replica an earlier orchestrator of this node left running, asked to stop: no
    /// replica starts until it has exited ([`Self::wait_leftover`]).
    leftover: Option<i32>,
}

impl Supervisor {
    pub fn new(grace: Duration) -> Self {
        Self {
            running: None,
            backoff: MIN_BACKOFF,
            not_before: None,
            restarts: 0,
            last_exit: None,
            grace,
            leftover: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    pub fn running_version(&self) -> Option<&ReplicaVersion> {
        self.running.as_ref().map(|r| &r.launch.version)
    }

    /// Notices an exit; returns true while a replica runs.
    fn reap(&mut self) -> bool {
        let Some(r) = self.running.as_mut() else {
            return false;
        };
        match r.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                let ran = r.started.elapsed();
                tracing::warn!(%status, ran_ms = ran.as_millis() as u64, "the replica exited");
                self.last_exit = Some(format!("replica exited: {status}"));
                self.backoff = if ran >= HEALTHY_AFTER {
                    MIN_BACKOFF
                } else {
                    (self.backoff * 2).min(MAX_BACKOFF)
                };
                self.not_before = Some(Instant::now() + self.backoff);
                let _ = std::fs::remove_file(pid_file(&r.launch.node_dir));
                self.running = None;
                self.restarts += 1;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot poll the replica");
                true
            }
        }
    }

    /// Starts the replica unless one runs (of any launch: a running replica follows
    /// newer CUPs itself) or the backoff after a crash has not passed.
    pub fn ensure(&mut self, launch: &Launch) -> Result<(), String> {
        if self.reap() {
            return Ok(());
        }
        if let Some(pid) = self.leftover {
            return Err(format!(
                "not starting a replica while the earlier one (pid {pid}) is stopping"
            ));
        }
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(launch.node_dir.join("replica.log"))
            .map_err(|e| format!("replica.log: {e}"))?;
        let mut cmd = Command::new(&launch.binary);
        cmd.arg("--node-dir")
            .arg(&launch.node_dir)
            .arg("--version")
            .arg(launch.version.as_str())
            .arg("--cup")
            .arg(&launch.cup)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env_remove(crate::switch::VERIFIED_IMAGE_ENV)
            .process_group(0);
        // ETXTBSY: a binary written moments ago can still be open for writing in a child
        // that another thread forked before its exec closed the descriptor; it passes.
        let mut attempts = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e)
                    if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                        && attempts < 50 =>
                {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => {
                    break r
                        .map_err(|e| format!("cannot start {}: {e}", launch.binary.display()))?;
                }
            }
        };
        tracing::info!(pid = child.id(), version = %launch.version, cup_height = %launch.cup_height, "replica started");
        if let Err(e) = std::fs::write(pid_file(&launch.node_dir), format!("{}\n", child.id())) {
            tracing::warn!(error = %e, "cannot record the replica's pid");
        }
        self.running = Some(Running {
            child,
            launch: launch.clone(),
            started: Instant::now(),
        });
        Ok(())
    }

    /// SIGTERM to the replica's process group, SIGKILL after the grace period.
    pub async fn stop(&mut self) {
        self.wait_leftover().await;
        let Some(mut r) = self.running.take() else {
            return;
        };
        let pgid = Pid::from_raw(r.child.id() as i32);
        if terminate_group(pgid, self.grace, || {
            matches!(r.child.try_wait(), Ok(Some(_)))
        })
        .await
        {
            tracing::info!("replica stopped");
        } else {
            tracing::warn!("replica ignored SIGTERM: SIGKILL");
            let _ = r.child.wait();
        }
        let _ = std::fs::remove_file(pid_file(&r.launch.node_dir));
    }

    /// Asks the replica to stop (SIGTERM to its group) and forgets it without waiting:
    /// for a switch, whose next process (this one, re-executed into the new release's
    /// orchestrator, so still the replica's parent) takes it over through `replica.pid`,
    /// which stays ([`Self::take_leftover`], [`Self::wait_leftover`]). The replica's own
    /// shutdown (its connections' close) overlaps with that process's start.
    pub fn signal_stop(&mut self) {
        let Some(r) = self.running.take() else {
            return;
        };
        let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM);
        tracing::info!(pid = r.child.id(), "replica asked to stop");
    }

    /// Takes over a replica that a previous orchestrator of this node left running (it
    /// died without stopping it, or handed the stop over: [`Self::signal_stop`]): the
    /// one `replica.pid` names, if it still runs and its command line names this node
    /// directory (a recycled pid is left alone). It is asked to stop at once; no
    /// replica starts until it has exited, which [`Self::wait_leftover`] waits for, so
    /// its shutdown overlaps with whatever this process does before starting one.
    /// Returns whether one is still running (to be waited for).
    pub fn take_leftover(&mut self, node_dir: &Path) -> bool {
        let file = pid_file(node_dir);
        let Ok(text) = std::fs::read_to_string(&file) else {
            return false;
        };
        let _ = std::fs::remove_file(&file);
        let Ok(pid) = text.trim().parse::<i32>() else {
            return false;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.windows(2).any(|w| {
                w[0] == b"--node-dir" && Path::new(std::ffi::OsStr::from_bytes(w[1])) == node_dir
            })
        });
        if !ours {
            // Exited already (an exited child of this process, which it is after a
            // re-execution, has no command line left): collect its status.
            reap(pid);
            return false;
        }
        tracing::info!(
            pid,
            "a replica left running by an earlier orchestrator of this node: stopping it"
        );
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        self.leftover = Some(pid);
        true
    }

    /// Waits until the replica [`Self::take_leftover`] took has exited (SIGKILL after the
    /// grace period). Returns whether there was one.
    pub async fn wait_leftover(&mut self) -> bool {
        let Some(pid) = self.leftover else {
            return false;
        };
        let pgid = Pid::from_raw(pid);
        terminate_group(pgid, self.grace, || {
            nix::sys::signal::kill(pgid, None).is_err() || is_zombie(pid)
        })
        .await;
        reap(pid);
        self.leftover = None;
        tracing::info!(pid, "the earlier replica has exited");
        true
    }

    /// [`Self::take_leftover`], then [`Self::wait_leftover`].
    pub async fn stop_leftover(&mut self, node_dir: &Path) {
        self.take_leftover(node_dir);
        self.wait_leftover().await;
    }
}

/// Collects the exit status of `pid` if it is an exited child of this process (after a
/// re-execution, the replica the previous image started is), so no zombie stays
/// behind; for anyone else's process this is a no-op.
fn reap(pid: i32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

/// SIGTERM to the process group, then SIGKILL if `gone` does not hold within `grace`.
/// Returns whether it went on SIGTERM.
async fn terminate_group(pgid: Pid, grace: Duration, mut gone: impl FnMut() -> bool) -> bool {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if gone() {
            return true;
        }
        // Short: during a switch the subnet is down until this returns.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    false
}

/// Where the running replica's pid is kept.
pub fn pid_file(node_dir: &Path) -> PathBuf {
    node_dir.join("replica.pid")
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|st| st.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake replica: a shell script with the given body.
    fn script(dir: &Path, body: &str) -> Launch {
        let binary = dir.join("replica");
        std::fs::write(&binary, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Launch {
            binary,
            node_dir: dir.to_path_buf(),
            version: ReplicaVersion::new("1.0.0").expect("version"),
            cup: dir.join("cup.cup"),
            cup_height: Height::ZERO,
        }
    }

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test]
    async fn a_crashing_replica_is_restarted_after_a_growing_backoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let launch = script(dir.path(), "exit 3");
        let mut s = Supervisor::new(Duration::from_secs(1));
        s.ensure(&launch).expect("start");
        assert!(s.pid().is_some());
        // It exits: the next call notices, and does not restart it before the backoff.
        until(|| {
            s.ensure(&launch).expect("ensure");
            s.restarts == 1
        })
        .await;
        assert_eq!(s.pid(), None, "restarted without waiting");
        assert!(
            s.last_exit.as_deref().unwrap_or("").contains("3"),
            "{:?}",
            s.last_exit
        );
        // After the backoff it runs again, crashes again, and the wait doubles.
        until(|| {
            s.ensure(&launch).expect("ensure");
            s.restarts == 2
        })
        .await;
        assert_eq!(s.backoff, MIN_BACKOFF * 4);
    }

    #[tokio::test]
    async fn a_stop_handed_over_is_waited_for_by_the_next_supervisor_and_reaped() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A replica that takes a while to shut down (its connections' drain).
        let launch = script(
            dir.path(),
            "trap 'sleep 0.3; exit 0' TERM\nwhile :; do sleep 0.05; done",
        );
        let mut old = Supervisor::new(Duration::from_secs(5));
        old.ensure(&launch).expect("start");
        let pid = old.pid().expect("running") as i32;
        // The shell must have set its trap before the signal.
        tokio::time::sleep(Duration::from_millis(200)).await;
        old.signal_stop();
        assert_eq!(old.pid(), None);
        assert!(
            pid_file(dir.path()).exists(),
            "the pid file is the next process's only way to find it"
        );
        let alive = || nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok();
        assert!(alive() && !is_zombie(pid), "it exited before its drain");
        // The next process (here the same one, as after a re-execution) takes it over:
        // it starts no replica beside it, and once `wait_leftover` returns it has
        // exited and its status was collected.
        let started = Instant::now();
        let mut next = Supervisor::new(Duration::from_secs(5));
        next.take_leftover(dir.path());
        let refused = next.ensure(&launch);
        if refused.is_ok() {
            // Not left running by a failed test.
            next.stop().await;
        }
        assert!(refused.is_err(), "a second replica beside the stopping one");
        assert_eq!(next.pid(), None);
        assert!(next.wait_leftover().await);
        assert!(
            !alive(),
            "still there (or left a zombie) after wait_leftover"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited out the grace: the SIGKILL path, not the replica's own exit"
        );
        assert!(!pid_file(dir.path()).exists());
        // Then a replica starts.
        next.ensure(&launch).expect("start");
        assert!(next.pid().is_some());
        next.stop().await;
    }

    #[tokio::test]
    async fn stop_sends_sigterm_to_the_group_and_sigkill_when_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A child in the same group shows the signal reaches the whole group.
        let pid_file = dir.path().join("child.pid");
        let body = format!(
            "trap '' TERM\nsleep 30 &\necho $! > {}\nwait",
            pid_file.display()
        );
        let launch = script(dir.path(), &body);
        let mut s = Supervisor::new(Duration::from_millis(300));
        s.ensure(&launch).expect("start");
        until(|| {
            pid_file.exists()
                && std::fs::read_to_string(&pid_file).is_ok_and(|t| !t.trim().is_empty())
        })
        .await;
        let child: i32 = std::fs::read_to_string(&pid_file)
            .expect("read")
            .trim()
            .parse()
            .expect("pid");
        s.stop().await;
        assert_eq!(s.pid(), None);
        // The group's other member was killed too (a zombie waiting for a reaper is dead).
        until(|| {
            nix::sys::signal::kill(Pid::from_raw(child), None).is_err()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|st| st.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        })
        .await;
    }
}
