//! `dashboard`: a live web page of a network, read from outside as any observer could.
//!
//! Every refresh ([`run`], once a second by default) reads the registry (status, subnets,
//! elected versions, the newest proposals, and the node records of every subnet member,
//! through [`registry::client::RegistryClient`], verified against `--registry-key` when
//! given) and, at the same time, polls every node the previous read named: the replica's
//! `GET /api/v1/status` at the record's `http_address` and the orchestrator's
//! `GET /status` at its `cup_address` ([`sources`]). A [`overview::Watcher`] turns the
//! answers into the [`overview::Overview`] that `GET /api/v1/overview` serves and the page
//! (`page.html`, one file with its CSS and script inline, no external resource) polls
//! every second. The rollout timeline is [`rollout`].
//!
//! | method, path | answer |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /api/v1/overview` | [`overview::Overview`] as JSON |
//! | `GET /metrics` | the refreshes' counts and durations ([`metrics`]) |

pub mod answers;
pub mod metrics;
pub mod overview;
pub mod rollout;
pub mod server;
pub mod sources;

#[cfg(test)]
mod tests;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The most proposals shown (the newest; the count of open ones comes from the
/// registry's status).
pub const RECENT_PROPOSALS: usize = 50;
/// The most rollouts remembered (newest first).
pub const MAX_ROLLOUTS: usize = 8;
/// The shortest refresh interval `--interval-ms` accepts.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Refreshes every `interval` forever, publishing each overview to `out`.
pub async fn run<S: sources::Sources>(
    sources: Arc<S>,
    mut watcher: overview::Watcher,
    interval: Duration,
    out: Arc<server::Published>,
) {
    loop {
        let started = tokio::time::Instant::now();
        let known = watcher.known_nodes();
        let (registry, answers) =
            sources::refresh(&sources, &known, sources::Deadlines::DEFAULT).await;
        if let Err(e) = &registry {
            tracing::debug!(error = %e, "registry read failed");
        }
        out.metrics.count_answers(&answers);
        let overview = watcher.observe(now_unix_ms(), registry, answers);
        out.publish(&overview);
        out.metrics.record(&overview, started.elapsed());
        // The first read named the nodes: poll them now rather than a second later.
        if watcher.known_nodes() != known {
            continue;
        }
        tokio::time::sleep_until(started + interval).await;
    }
}
