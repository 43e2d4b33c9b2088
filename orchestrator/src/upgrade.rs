//! The orchestrator's upgrade as a typed state machine: [`Upgrade::step`] takes the time,
//! the [`Decision`] and what the effects have reported so far ([`Observe`]) and returns
//! the [`Effect`]s to carry out, in order. It does no I/O and reads no clock, so unit
//! tests drive it with fakes and the simulator drives the very same transitions for its
//! nodes (readiness, recall and recovery across seeds). `node::Orchestrator` carries the
//! effects out: jobs beside the loop, files, the supervisor, webhooks, the re-execution.
//!
//! ```text
//!            deployed (Run + prefetch)            the CUP names it (Upgrade)
//!   Idle ───────────────► Downloading ──► Preflight ──► Ready ───────────► Switching ──► exec
//!     ▲                        │              │                                │
//!     │ nothing deployed       ▼              ▼                                ▼
//!     └──────────────────── Failed (why; retried: download backoff, preflight, rehearsal)
//!
//!   any ──Hold (recalled)──► Recalled ──(a recovery CUP or another deployment)──► as decided
//! ```
//!
//! After a switch the machine also watches the new release's health ([`Health`]).

use crate::decide::{Decision, Release};
use cup::Cup;
use std::collections::BTreeSet;
use types::{Height, ReplicaVersion};

/// A failed preflight of the deployed release is run again after this long (a
/// checkpoint, the registry or a mirror may have changed).
pub const PREFLIGHT_RETRY_MS: u64 = 20_000;
/// After a switch, the subnet must make a CUP above the one switched at, on the new
/// release, and this node's own shares must be in its finalized chain above it, within
/// this long; otherwise the release is unhealthy here.
pub const HEALTH_DEADLINE_MS: u64 = 300_000;
/// The most (step, subject) pairs remembered to post each step once.
const MAX_NOTIFIED: usize = 1024;

/// Where this node's upgrade stands; `/status`'s `upgrade.state` is [`Phase::name`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing deployed beyond the running release.
    Idle,
    /// Fetching the target release.
    Downloading,
    /// Rehearsing the deployed release beside the loop.
    Preflight,
    /// Fetched, verified and rehearsed: this node's readiness is gossiped.
    Ready,
    /// The CUP names the target and it is ready here: stopping and re-executing.
    Switching,
    /// A step failed; it is retried (download backoff, preflight, rehearsal).
    Failed { reason: String },
    /// The release to run was recalled: nothing runs until a recovery or a deployment.
    Recalled { reason: String },
}

impl Phase {
    /// Every [`Phase::name`].
    pub const NAMES: [&'static str; 7] = [
        "idle",
        "downloading",
        "preflight",
        "ready",
        "switching",
        "failed",
        "recalled",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Downloading => "downloading",
            Phase::Preflight => "preflight",
            Phase::Ready => "ready",
            Phase::Switching => "switching",
            Phase::Failed { .. } => "failed",
            Phase::Recalled { .. } => "recalled",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Phase::Failed { reason } | Phase::Recalled { reason } => Some(reason),
            _ => None,
        }
    }
}

/// The new release's health after this process switched to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Switched; no CUP above the switch yet.
    Watching,
    /// The subnet made a CUP above the one switched at, on this release.
    Healthy,
    /// The replica exited before that, or the deadline passed.
    Unhealthy,
}

impl HealthState {
    /// Every [`HealthState::name`].
    pub const NAMES: [&'static str; 3] = ["watching", "healthy", "unhealthy"];

    pub fn name(&self) -> &'static str {
        match self {
            HealthState::Watching => "watching",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// `/status`'s `upgrade.health`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    pub reason: Option<String>,
    pub switched_at_cup_height: u64,
    /// Replica restarts since the switch, and the latest exit (a crash loop shows here).
    pub replica_restarts: u64,
    pub last_exit: Option<String>,
}

/// A finished preflight, as the machine reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: Option<String>,
    /// When it finished (the caller's clock, milliseconds).
    pub finished_ms: u64,
}

/// What the replica has shown of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSeen {
    /// Restarts after an exit so far, and the latest exit.
    pub restarts: u64,
    pub last_exit: Option<String>,
    /// The highest finalized height whose notarization or finalization carries this
    /// node's share, as the running release's replica last reported it.
    pub own_share_height: Option<u64>,
}

/// What the effects have reported: the node's jobs, verified images and supervisor in
/// production; fakes in unit tests and the simulator.
pub trait Observe {
    /// `release`'s image is unpacked and verified by this process.
    fn image_ready(&self, release: &Release) -> bool;
    /// Why the latest download of `release` failed, while its retry waits.
    fn download_failed(&self, release: &Release) -> Option<String>;
    /// The latest finished preflight of `release`.
    fn preflight(&self, release: &Release) -> Option<Verdict>;
    /// Until when (the caller's clock) a refused rehearsal of `release` waits.
    fn refused_until(&self, release: &Release) -> Option<u64>;
    /// The replica's restarts, latest exit and own shares (read only while the health
    /// of a switch is watched).
    fn replica(&self) -> ReplicaSeen;
}

/// What to do, in order. Each is idempotent: a tick that sees the same inputs asks for
/// the same effects, and the executor skips what already runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Keep this CUP as the best one, durably. If it fails, the tick ends there.
    Persist(Box<Cup>),
    /// Run (and keep restarting) `release`'s replica from the persisted CUP.
    Run {
        release: Release,
        cup_height: Height,
    },
    /// Restart no replica from here on; the one running (if any) stays until a switch.
    NoRestarts,
    /// Stop the replica now and restart none.
    StopReplica,
    /// Stop the replica and wipe its state (the node left the subnet for good).
    Wipe,
    /// Fetch, verify and unpack `release` beside the loop (unless it is, or waits).
    Fetch(Release),
    /// Rehearse `release` (ready here) beside the loop (unless it is).
    Preflight(Release),
    /// Tell the replica this node's readiness for `version`; it signs and gossips it.
    Readiness {
        version: ReplicaVersion,
        ready: bool,
        reason: String,
    },
    /// No release is deployed beyond the running one: withdraw the readiness word.
    ClearReadiness,
    /// Rehearse `release` against the CUP, stop the replica, point `images/current` at
    /// it and re-execute into its orchestrator.
    Switch(Release),
    /// Post a step to the webhooks.
    Notify {
        step: &'static str,
        version: ReplicaVersion,
        detail: String,
    },
}

/// The upgrade's state: the phase, its target, the steps posted, and the health watch.
#[derive(Clone, Debug)]
pub struct Upgrade {
    phase: Phase,
    target: Option<Release>,
    notified: BTreeSet<(&'static str, String)>,
    /// This process was re-executed into by the previous release's orchestrator.
    just_switched: bool,
    /// After a switch, until a CUP above it: the height switched at, the replica
    /// restarts then, and when (the caller's clock).
    watching: Option<(u64, u64, u64)>,
    health: Option<Health>,
}

impl Upgrade {
    /// A machine in a fresh process; `just_switched` if the previous release's
    /// orchestrator re-executed into this one.
    pub fn new(just_switched: bool) -> Self {
        Self {
            phase: Phase::Idle,
            target: None,
            notified: BTreeSet::new(),
            just_switched,
            watching: None,
            health: None,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The release being prepared or switched to.
    pub fn target(&self) -> Option<&Release> {
        self.target.as_ref()
    }

    pub fn health(&self) -> Option<&Health> {
        self.health.as_ref()
    }

    /// An effect failed (a refused rehearsal, a failed re-execution): say why.
    pub fn failed(&mut self, reason: String) {
        self.phase = Phase::Failed { reason };
    }

    /// One tick: the effects of `decision` at `now_ms`, for a node running `running`.
    pub fn step(
        &mut self,
        now_ms: u64,
        running: &ReplicaVersion,
        decision: &Decision,
        seen: &impl Observe,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        match decision {
            Decision::Unassigned => {
                self.phase = Phase::Idle;
                self.target = None;
                fx.push(Effect::StopReplica);
            }
            Decision::Wait { .. } => {}
            Decision::Hold { reason, .. } => {
                self.notify(&mut fx, "recalled", running, "hold", reason.clone());
                if !matches!(self.phase, Phase::Recalled { .. }) {
                    fx.push(Effect::StopReplica);
                }
                self.phase = Phase::Recalled {
                    reason: reason.clone(),
                };
                self.target = None;
                fx.push(Effect::ClearReadiness);
            }
            Decision::Leave { wipe, .. } => {
                self.phase = Phase::Idle;
                self.target = None;
                fx.push(if *wipe {
                    Effect::Wipe
                } else {
                    Effect::StopReplica
                });
            }
            Decision::Run {
                cup,
                release,
                prefetch,
                ..
            } => {
                fx.push(Effect::Persist(cup.clone()));
                if !seen.image_ready(release) {
                    // The running image failed its check: fetch and unpack it again; no
                    // replica starts from it meanwhile.
                    fx.push(Effect::NoRestarts);
                    self.fetch(&mut fx, release, seen);
                    return fx;
                }
                match prefetch {
                    Some(next) => self.prepare(&mut fx, now_ms, next, seen),
                    None => {
                        self.phase = Phase::Idle;
                        self.target = None;
                        fx.push(Effect::ClearReadiness);
                    }
                }
                self.watch(&mut fx, now_ms, cup, release, seen);
                fx.push(Effect::Run {
                    release: release.clone(),
                    cup_height: cup.content().height,
                });
            }
            Decision::Upgrade { cup, release, .. } => {
                fx.push(Effect::Persist(cup.clone()));
                let h = cup.content().height;
                let detail = format!("the CUP at height {h} names it ({})", cup.kind_name());
                let sha = release.package_sha256.clone();
                self.notify(&mut fx, "cup_signed", &release.version, &sha, detail);
                // The old replica cannot start from the halting CUP: no restarts now.
                fx.push(Effect::NoRestarts);
                self.target = Some(release.clone());
                if seen.refused_until(release).is_some_and(|t| now_ms < t) {
                    // A refused rehearsal is retried later; the phase says why.
                    return fx;
                }
                if !seen.image_ready(release) {
                    self.fetch(&mut fx, release, seen);
                    return fx;
                }
                self.phase = Phase::Switching;
                fx.push(Effect::Switch(release.clone()));
            }
        }
        fx
    }

    /// A download beside the loop finished: `Ok(bytes)` or why not.
    pub fn downloaded(&mut self, release: &Release, result: &Result<u64, String>) -> Vec<Effect> {
        let mut fx = Vec::new();
        let (step, detail) = match result {
            Ok(bytes) => (
                "downloaded",
                format!("{bytes} bytes, verified and unpacked"),
            ),
            Err(e) => {
                self.phase = Phase::Failed {
                    reason: format!("cannot download {}: {e}", release.version),
                };
                ("download_failed", e.clone())
            }
        };
        let sha = release.package_sha256.clone();
        self.notify(&mut fx, step, &release.version, &sha, detail);
        fx
    }

    /// A preflight beside the loop finished; `detail` describes it for the webhooks.
    pub fn preflight_finished(
        &mut self,
        release: &Release,
        verdict: &Verdict,
        detail: String,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let step = if verdict.ok {
            "preflight_passed"
        } else {
            "preflight_failed"
        };
        let key = format!("{} {}", release.package_sha256, verdict.finished_ms);
        self.notify(&mut fx, step, &release.version, &key, detail);
        fx
    }

    /// Fetching `release`: the phase is the download's.
    fn fetch(&mut self, fx: &mut Vec<Effect>, release: &Release, seen: &impl Observe) {
        self.target = Some(release.clone());
        fx.push(Effect::Fetch(release.clone()));
        self.phase = match seen.download_failed(release) {
            Some(e) => Phase::Failed {
                reason: format!("cannot download {}: {e}", release.version),
            },
            None => Phase::Downloading,
        };
    }

    /// Gets the release the registry deploys ready before any halt (fetched, verified,
    /// rehearsed) and tells the replica this node's verdict.
    fn prepare(&mut self, fx: &mut Vec<Effect>, now_ms: u64, next: &Release, seen: &impl Observe) {
        let sha = next.package_sha256.clone();
        let detail = format!("the registry deploys package {sha}");
        self.notify(fx, "deployed_seen", &next.version, &sha, detail);
        let (ready, reason) = if !seen.image_ready(next) {
            self.fetch(fx, next, seen);
            let reason = match &self.phase {
                Phase::Failed { reason } => reason.clone(),
                _ => format!("downloading {}", next.version),
            };
            (false, reason)
        } else {
            self.target = Some(next.clone());
            match seen.preflight(next) {
                Some(v) if v.ok => {
                    self.phase = Phase::Ready;
                    (true, "preflight passed".to_string())
                }
                Some(v) => {
                    if now_ms.saturating_sub(v.finished_ms) >= PREFLIGHT_RETRY_MS {
                        fx.push(Effect::Preflight(next.clone()));
                    }
                    let reason = format!("preflight failed: {}", v.reason.unwrap_or_default());
                    self.phase = Phase::Failed {
                        reason: reason.clone(),
                    };
                    (false, reason)
                }
                None => {
                    fx.push(Effect::Preflight(next.clone()));
                    self.phase = Phase::Preflight;
                    (false, "preflight running".to_string())
                }
            }
        };
        fx.push(Effect::Readiness {
            version: next.version.clone(),
            ready,
            reason,
        });
    }

    /// The steps after a switch or a recovery: `switched` once this release runs,
    /// `healthy` once the subnet made a CUP above the one switched at and this node's
    /// own shares are in its finalized chain above it, `unhealthy` if the replica exited
    /// first or that did not happen within [`HEALTH_DEADLINE_MS`];
    /// `recovered` when a recovery CUP is run from.
    fn watch(
        &mut self,
        fx: &mut Vec<Effect>,
        now_ms: u64,
        cup: &Cup,
        release: &Release,
        seen: &impl Observe,
    ) {
        let h = cup.content().height.get();
        let sha = release.package_sha256.clone();
        let version = &release.version;
        if let Cup::Registry(r) = cup
            && r.kind == cup::RegistryCupKind::Recovery
        {
            let detail = format!("running from the recovery CUP at height {h}");
            self.notify(fx, "recovered", version, &format!("{sha} {h}"), detail);
        }
        if !self.just_switched && self.watching.is_none() {
            return;
        }
        let ReplicaSeen {
            restarts,
            last_exit,
            own_share_height,
        } = seen.replica();
        if std::mem::take(&mut self.just_switched) {
            let detail = format!("running from the CUP at height {h}");
            self.notify(fx, "switched", version, &sha, detail);
            self.watching = Some((h, restarts, now_ms));
            self.health = Some(Health {
                state: HealthState::Watching,
                reason: None,
                switched_at_cup_height: h,
                replica_restarts: 0,
                last_exit: None,
            });
        }
        let Some((at, restarts_then, since_ms)) = self.watching else {
            return;
        };
        let restarted = restarts.saturating_sub(restarts_then);
        let takes_part = own_share_height.is_some_and(|o| o > at);
        let verdict = if h > at && takes_part {
            self.watching = None;
            let own = own_share_height.unwrap_or_default();
            let detail = format!(
                "the subnet made the CUP at height {h} on this release; this node's shares are in its chain up to height {own}"
            );
            Some((HealthState::Healthy, "healthy", detail))
        } else if restarted > 0 {
            let exit = last_exit.clone().unwrap_or_default();
            let reason = format!("the replica exited: {exit}");
            Some((HealthState::Unhealthy, "unhealthy", reason))
        } else if now_ms.saturating_sub(since_ms) >= HEALTH_DEADLINE_MS {
            let secs = HEALTH_DEADLINE_MS / 1000;
            let reason = if h > at {
                format!(
                    "this node's shares are in no finalized block above height {at} within {secs} s of the switch: it follows the subnet but takes no part"
                )
            } else {
                format!("no CUP above height {at} within {secs} s of the switch")
            };
            Some((HealthState::Unhealthy, "unhealthy", reason))
        } else {
            None
        };
        if let Some((state, step, reason)) = verdict {
            if let Some(health) = self.health.as_mut() {
                health.state = state;
                health.reason = Some(reason.clone());
                health.replica_restarts = restarted;
                health.last_exit = last_exit;
            }
            self.notify(fx, step, version, &sha, reason);
        }
    }

    /// Posts `step` about `subject` once.
    fn notify(
        &mut self,
        fx: &mut Vec<Effect>,
        step: &'static str,
        version: &ReplicaVersion,
        subject: &str,
        detail: String,
    ) {
        if self.notified.len() > MAX_NOTIFIED {
            self.notified.clear();
        }
        if self.notified.insert((step, subject.to_string())) {
            fx.push(Effect::Notify {
                step,
                version: version.clone(),
                detail,
            });
        }
    }
}

#[cfg(test)]
mod tests;
