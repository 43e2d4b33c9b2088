//! Acting on a decision: the upgrade machine ([`crate::upgrade`]) says what to do, and
//! this carries its effects out: files, jobs beside the loop, the supervisor, webhooks,
//! the rehearsal and the switch.

use super::{Orchestrator, REHEARSAL_RETRY, cup_path, unix_ms};
use crate::{
    decide::{Decision, Release},
    handover::{self, SwitchTimes},
    preflight,
    process::Launch,
    switch,
    upgrade::{Effect, Observe, Phase, ReplicaSeen, Verdict},
};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Instant,
};

/// What the node's effects have reported, as the machine reads it.
struct Observed<'a> {
    node_dir: &'a Path,
    running: &'a types::ReplicaVersion,
    images: &'a Path,
    verified: &'a BTreeSet<String>,
    download_backoff: &'a BTreeMap<String, (std::time::Duration, Instant)>,
    download_error: &'a Option<(String, String)>,
    preflight_done: &'a Option<(crate::server::PreflightView, u64)>,
    refused: &'a BTreeMap<String, u64>,
    restarts: u64,
    last_exit: Option<String>,
}

impl Observe for Observed<'_> {
    fn image_ready(&self, release: &Release) -> bool {
        self.verified.contains(&release.package_sha256)
            && release::inspect_image(self.images, &release.package_sha256)
                .is_ok_and(|i| i.version == release.version)
    }

    fn download_failed(&self, release: &Release) -> Option<String> {
        let sha = &release.package_sha256;
        let waiting = self
            .download_backoff
            .get(sha)
            .is_some_and(|(_, until)| Instant::now() < *until);
        match self.download_error {
            Some((failed, e)) if waiting && failed == sha => Some(e.clone()),
            _ if waiting => Some("the last download failed".into()),
            _ => None,
        }
    }

    fn preflight(&self, release: &Release) -> Option<Verdict> {
        self.preflight_done
            .as_ref()
            .filter(|(v, _)| v.package_sha256 == release.package_sha256)
            .map(|(v, at)| Verdict {
                ok: v.ok,
                reason: v.reason.clone(),
                finished_ms: *at,
            })
    }

    fn refused_until(&self, release: &Release) -> Option<u64> {
        self.refused.get(&release.package_sha256).copied()
    }

    fn replica(&self) -> ReplicaSeen {
        ReplicaSeen {
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            own_share_height: preflight::own_share_height(self.node_dir, self.running),
        }
    }
}

impl Orchestrator {
    /// The machine's clock.
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) async fn act(&mut self, decision: Decision) -> Option<(PathBuf, String)> {
        if let Ok(mut s) = self.shared.status.lock() {
            s.decision = format!("{decision:?}").chars().take(200).collect();
        }
        match &decision {
            Decision::Wait { reason } => tracing::debug!(%reason, "waiting"),
            Decision::Leave { subnet, wipe } => {
                tracing::info!(%subnet, wipe, "left the subnet: stopping the replica");
            }
            _ => {}
        }
        let was_recalled = matches!(self.upgrade.phase(), Phase::Recalled { .. });
        let now = self.now_ms();
        let seen = Observed {
            node_dir: &self.node_dir,
            running: &self.image.version,
            images: &self.images,
            verified: &self.verified,
            download_backoff: &self.download_backoff,
            download_error: &self.download_error,
            preflight_done: &self.preflight_done,
            refused: &self.refused,
            restarts: self.supervisor.restarts,
            last_exit: self.supervisor.last_exit.clone(),
        };
        let fx = self
            .upgrade
            .step(now, &self.image.version, &decision, &seen);
        if let Phase::Recalled { reason } = self.upgrade.phase() {
            if !was_recalled {
                tracing::error!(%reason, "holding: the release to run was recalled; its replica stops");
            }
            self.last_error = Some(reason.clone());
        }
        self.apply(fx).await
    }

    /// Carries out the machine's effects in order. A CUP that cannot be persisted ends
    /// the tick (nothing may run from a CUP that is not on disk); any other failure is
    /// reported and the next tick asks again. Returns the binary to re-execute into.
    pub(super) async fn apply(&mut self, fx: Vec<Effect>) -> Option<(PathBuf, String)> {
        for effect in fx {
            match effect {
                Effect::Persist(cup) => {
                    if let Err(e) = self.persist_best(&cup) {
                        self.fail(e);
                        return None;
                    }
                }
                Effect::Run {
                    release,
                    cup_height,
                } => {
                    let image = release::image_dir(&self.images, &release.package_sha256);
                    self.launch = Some(Launch {
                        binary: image.join(release::REPLICA_BINARY),
                        node_dir: self.node_dir.clone(),
                        version: release.version.clone(),
                        cup: cup_path(&self.node_dir),
                        cup_height,
                    });
                    self.keep_replica_alive().await;
                }
                Effect::NoRestarts => self.launch = None,
                Effect::StopReplica => {
                    self.launch = None;
                    self.supervisor.stop().await;
                }
                Effect::Wipe => {
                    self.launch = None;
                    self.supervisor.stop().await;
                    for d in ["replica", "cups"] {
                        let _ = std::fs::remove_dir_all(self.node_dir.join(d));
                    }
                    let _ = std::fs::remove_file(cup_path(&self.node_dir));
                    // Its share of the genesis sharing still combines with others' (a
                    // resharing keeps the group key): a machine that left keeps none.
                    for f in ["low_share.key", "high_share.key"] {
                        let _ = std::fs::remove_file(self.node_dir.join(f));
                    }
                    if let Ok(mut b) = self.shared.best_cup.lock() {
                        *b = None;
                    }
                }
                Effect::Fetch(release) => self.ensure_fetching(&release),
                Effect::Preflight(release) => self.start_preflight(&release),
                Effect::Readiness {
                    version,
                    ready,
                    reason,
                } => {
                    if let Err(e) =
                        preflight::write_readiness(&self.node_dir, &version, ready, &reason)
                    {
                        self.fail(e);
                    }
                }
                Effect::ClearReadiness => preflight::clear_readiness(&self.node_dir),
                Effect::Switch(release) => return self.switch(release).await,
                Effect::Notify {
                    step,
                    version,
                    detail,
                } => {
                    if step == "unhealthy" {
                        self.shared.metrics.upgrades_unhealthy.inc();
                    }
                    self.post(step, version, detail);
                }
            }
        }
        None
    }

    /// Starts rehearsing `release` (verified and unpacked) beside the loop, unless it is.
    fn start_preflight(&mut self, release: &Release) {
        if self
            .preflight_job
            .as_ref()
            .is_some_and(|j| &j.release == release)
        {
            return;
        }
        let image = match release::inspect_image(&self.images, &release.package_sha256) {
            Ok(i) => i,
            Err(e) => {
                self.fail(format!("preflight of {}: {e}", release.version));
                return;
            }
        };
        tracing::info!(version = %release.version, "preflight: rehearsing the deployed release beside the loop");
        self.preflight_job = Some(preflight::Job::spawn(
            release.clone(),
            self.node_dir.clone(),
            cup_path(&self.node_dir),
            image,
        ));
    }

    pub(super) async fn take_preflight_result(&mut self) {
        let Some(job) = self.preflight_job.as_mut() else {
            return;
        };
        let Some(verdict) = job.take_if_done().await else {
            return;
        };
        let release = job.release.clone();
        self.preflight_job = None;
        let detail = if verdict.ok {
            let ms = verdict
                .migration_ms
                .map(|m| format!(", migration {m} ms"))
                .unwrap_or_default();
            format!("rehearsed in {} ms{ms}", verdict.elapsed_ms)
        } else {
            verdict.reason.clone().unwrap_or_default()
        };
        self.shared
            .metrics
            .preflight_seconds
            .observe(verdict.elapsed_ms as f64 / 1000.0);
        let now = self.now_ms();
        let seen = Verdict {
            ok: verdict.ok,
            reason: verdict.reason.clone(),
            finished_ms: now,
        };
        let fx = self.upgrade.preflight_finished(&release, &seen, detail);
        self.apply(fx).await;
        if verdict.ok {
            tracing::info!(version = %verdict.version, migration_ms = ?verdict.migration_ms, "preflight passed: this node is ready");
            self.last_error = None;
        } else {
            let reason = verdict.reason.clone().unwrap_or_default();
            tracing::error!(to = %verdict.version, %reason, "refused the upgrade in preflight: this node is not ready for it; the subnet runs on");
            self.shared.metrics.preflight_failures.inc();
            self.fail(format!(
                "refused {} in preflight: {reason}",
                verdict.version
            ));
        }
        self.preflight_done = Some((verdict, now));
    }

    /// Rehearses `release` (verified and unpacked) and switches to it: points
    /// `images/current` at it, asks the replica to stop, and returns its orchestrator to
    /// re-execute into (which waits for the old replica to exit before it starts the
    /// new one: the old replica's shutdown overlaps with the re-execution).
    async fn switch(&mut self, release: Release) -> Option<(PathBuf, String)> {
        let sha = release.package_sha256.clone();
        let image = match release::inspect_image(&self.images, &sha) {
            Ok(i) if i.version == release.version && self.verified.contains(&sha) => i,
            Ok(i) => {
                self.refuse(format!(
                    "refused to run image {}: it is version {} and was {}verified by this orchestrator, the registry lists {} for {}",
                    i.dir.display(),
                    i.version,
                    if self.verified.contains(&sha) { "" } else { "not " },
                    sha,
                    release.version
                ));
                return None;
            }
            Err(e) => {
                self.refuse(format!("refused to run {}: {e}", release.version));
                return None;
            }
        };
        let cup_height = super::read_cup(&cup_path(&self.node_dir))
            .map(|c| c.content().height.get())
            .unwrap_or(0);
        let mut times = SwitchTimes {
            from_version: self.image.version.to_string(),
            to_version: release.version.to_string(),
            cup_height,
            cup_written_unix_ms: handover::written_unix_ms(&handover::replica_cup_file(
                &self.node_dir,
                cup_height,
            )),
            cup_noticed_unix_ms: unix_ms(),
            noticed_by: if self.woken { "replica" } else { "poll" }.into(),
            rehearsed: false,
            ..SwitchTimes::default()
        };
        // The rehearsal: the new release checks it can start from this node's CUP and
        // state, writing nothing, while the running replica stays up. This node's
        // preflight already rehearsed this package before the halt (its readiness word
        // said so): the state it checked was written by the same release, so the check
        // is not repeated on the handover's critical path.
        let preflighted = self
            .preflight_done
            .as_ref()
            .is_some_and(|(v, _)| v.ok && v.package_sha256 == sha);
        times.rehearsed = !preflighted;
        if preflighted {
            tracing::info!(to = %release.version, "switch: the preflight rehearsed this package; not rehearsing again");
        } else if let Err(e) =
            switch::rehearse(&self.node_dir, &cup_path(&self.node_dir), &image).await
        {
            tracing::error!(
                from = %self.image.version,
                to = %release.version,
                reason = %e,
                "refused the upgrade: the new release cannot start from this node's state; the running replica and the state stay as they are"
            );
            self.refuse(format!("refused {}: {e}", release.version));
            let until = self.now_ms() + REHEARSAL_RETRY.as_millis() as u64;
            self.refused.insert(sha, until);
            return None;
        }
        self.refused.remove(&sha);
        self.publish();
        tracing::info!(from = %self.image.version, to = %release.version, package = %sha, "switching releases");
        // First the image (the old replica runs on while this can still fail), then the
        // stop, handed to the next process: see `Supervisor::signal_stop`.
        if let Err(e) = release::switch_current(&self.images, &sha) {
            self.refuse(format!("switching to {}: {e}", release.version));
            return None;
        }
        self.supervisor.signal_stop();
        self.switch_times = Some(times);
        self.shared
            .metrics
            .last_switch_timestamp_seconds
            .set(unix_ms() as f64 / 1000.0);
        Some((image.orchestrator_binary(), sha))
    }

    /// The switch failed: the machine and `/status` say why.
    fn refuse(&mut self, reason: String) {
        self.upgrade.failed(reason.clone());
        self.fail(reason);
    }
}
