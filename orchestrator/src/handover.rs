//! The handover's two aids: the replica wakes its orchestrator the moment it has written a
//! CUP ([`Wake`]), and each stage of the last switch is timed ([`SwitchTimes`]) so the
//! downtime can be read stage by stage in `/status` (`upgrade.last_switch`).
//!
//! The wake-up is a datagram on a Unix socket in the node directory ([`WAKE_SOCKET`]; the
//! replica's `node_dir::WAKE_SOCKET` names the same file). It carries no data the
//! orchestrator trusts: it only makes the next tick happen now rather than at the next
//! poll, and the tick reads and verifies the CUP files as always. A flood of datagrams
//! costs at most one tick per [`MIN_WAKE_INTERVAL`]. Without the socket (a path too long
//! for one, a read-only directory) the orchestrator polls as before.

use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// The socket's file name in the node directory.
pub const WAKE_SOCKET: &str = "orchestrator.sock";
/// Woken ticks are at least this far apart.
pub const MIN_WAKE_INTERVAL: Duration = Duration::from_millis(20);
/// The most datagrams drained after one wake-up (they are all the same news).
const MAX_DRAINED: usize = 64;
/// Set by an orchestrator on the one it re-executes into: the switch's stages so far.
pub const SWITCH_TIMES_ENV: &str = "ICUP_SWITCH_TIMES";
/// The most of that variable read.
const MAX_SWITCH_TIMES_ENV_BYTES: usize = 2048;

/// The receiving end of the replica's wake-ups.
#[derive(Debug)]
pub struct Wake {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
    /// When the last wake-up was taken.
    last: Option<tokio::time::Instant>,
}

impl Wake {
    /// Binds `DIR/orchestrator.sock` (replacing a file a previous process left), readable
    /// and writable by the node's user only. `None`, with a warning, if it cannot.
    pub fn bind(node_dir: &Path) -> Option<Self> {
        let path = node_dir.join(WAKE_SOCKET);
        let _ = std::fs::remove_file(&path);
        match tokio::net::UnixDatagram::bind(&path) {
            Ok(socket) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
                Some(Self {
                    socket,
                    path,
                    last: None,
                })
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "no wake-up socket: the orchestrator only polls");
                None
            }
        }
    }

    /// Resolves on the next wake-up (at least [`MIN_WAKE_INTERVAL`] after the previous
    /// one), after draining what else is queued. Cancel-safe.
    pub async fn woken(&mut self) {
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + MIN_WAKE_INTERVAL).await;
        }
        let mut buf = [0u8; 64];
        let _ = self.socket.recv(&mut buf).await;
        for _ in 0..MAX_DRAINED {
            if self.socket.try_recv(&mut buf).is_err() {
                break;
            }
        }
        self.last = Some(tokio::time::Instant::now());
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Waits for `wake`'s next wake-up, or forever without one.
pub async fn woken(wake: Option<&mut Wake>) {
    match wake {
        Some(w) => w.woken().await,
        None => std::future::pending().await,
    }
}

/// The stages of this node's last switch, wall clock in milliseconds since the Unix
/// epoch (`/status`'s `upgrade.last_switch`). A field is null when its stage was not
/// seen (a CUP that came from a peer has no `cup_written`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwitchTimes {
    pub from_version: String,
    pub to_version: String,
    pub cup_height: u64,
    /// The replica wrote the CUP that names the new release (its file's time).
    pub cup_written_unix_ms: Option<u64>,
    /// The orchestrator decided to switch.
    pub cup_noticed_unix_ms: u64,
    /// `replica` (woken by the replica's datagram) or `poll` (the regular tick).
    pub noticed_by: String,
    /// The switch's rehearsal ran (`false`: this node's preflight had rehearsed the
    /// same package before the halt).
    pub rehearsed: bool,
    /// The old replica had exited. Seen by the new release's orchestrator, which waits
    /// for it before starting the new replica: its shutdown overlaps with the
    /// re-execution, so this usually comes after `new_started_unix_ms`.
    pub old_stopped_unix_ms: Option<u64>,
    /// The new release's orchestrator started.
    pub new_started_unix_ms: Option<u64>,
    /// It started the new release's replica.
    pub replica_started_unix_ms: Option<u64>,
}

impl SwitchTimes {
    /// For [`SWITCH_TIMES_ENV`].
    pub fn to_env(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What the previous process left in [`SWITCH_TIMES_ENV`] (bounded; anything
    /// unreadable is none: these are figures, never decisions).
    pub fn from_env() -> Option<Self> {
        let v = std::env::var(SWITCH_TIMES_ENV).ok()?;
        if v.len() > MAX_SWITCH_TIMES_ENV_BYTES {
            return None;
        }
        serde_json::from_str(&v).ok()
    }
}

/// The file the replica writes a CUP at height `h` to (`replica::node_dir`'s
/// `cups/<h, 20 digits>.cup`).
pub fn replica_cup_file(node_dir: &Path, h: u64) -> PathBuf {
    node_dir.join("cups").join(format!("{h:020}.cup"))
}

/// The time `path` was last written, in milliseconds since the Unix epoch.
pub fn written_unix_ms(path: &Path) -> Option<u64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_datagram_on_the_socket_wakes_the_orchestrator_once_for_a_burst() {
        let dir = tempfile::tempdir().unwrap();
        // A file left by a previous process does not stop the bind.
        std::fs::write(dir.path().join(WAKE_SOCKET), b"stale").unwrap();
        let mut wake = Wake::bind(dir.path()).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(50), woken(Some(&mut wake))).await;
        assert!(quiet.is_err(), "woken with nothing sent");
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        for _ in 0..10 {
            sender.send_to(b"cup", wake.path()).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), woken(Some(&mut wake)))
            .await
            .expect("not woken by the datagrams");
        // The burst was drained: no second wake-up is pending.
        let again = tokio::time::timeout(Duration::from_millis(50), woken(Some(&mut wake))).await;
        assert!(again.is_err(), "a burst woke the orchestrator twice");
    }

    #[test]
    fn switch_times_cross_the_re_execution_and_junk_is_ignored() {
        let t = SwitchTimes {
            from_version: "1.0.0".into(),
            to_version: "2.0.0".into(),
            cup_height: 40,
            cup_written_unix_ms: Some(1),
            cup_noticed_unix_ms: 2,
            noticed_by: "replica".into(),
            rehearsed: false,
            old_stopped_unix_ms: Some(3),
            new_started_unix_ms: None,
            replica_started_unix_ms: None,
        };
        let back: SwitchTimes = serde_json::from_str(&t.to_env()).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<SwitchTimes>("{\"cup_height\":\"x\"}").is_err());
    }
}
