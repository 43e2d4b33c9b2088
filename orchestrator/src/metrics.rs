//! The orchestrator's `GET /metrics`: every metric lives in one Prometheus registry (the
//! conventions are in `registry::metrics`). The loop counts as things happen; the gauges
//! that mirror `/status` are set from it when scraped ([`Metrics::observe`]).

use crate::{
    server::StatusView,
    upgrade::{HealthState, Phase},
};
use axum::response::Response;
use prometheus::{Gauge, Histogram, IntCounter, IntGauge, IntGaugeVec, Registry};
use registry::metrics::{self as m, Builder};

/// Bounds of `orchestrator_preflight_duration_seconds`'s buckets: a rehearsal spawns a
/// process and may migrate a large checkpoint's copy.
const PREFLIGHT_SECONDS_BUCKETS: [f64; 10] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub registry_version: IntGauge,
    pub cup_height: IntGauge,
    pub replica_restarts: IntCounter,
    pub downloaded_bytes: IntCounter,
    pub download_failures: IntCounter,
    pub preflight_failures: IntCounter,
    pub preflight_seconds: Histogram,
    pub webhook_events_dropped: IntCounter,
    pub upgrades_unhealthy: IntCounter,
    pub registry_poll_failures: IntCounter,
    pub registry_pages_refused: IntCounter,
    pub peer_answers_refused: IntCounter,
    pub cup_requests_rate_limited: IntCounter,
    pub image_check_seconds: Gauge,
    pub last_switch_timestamp_seconds: Gauge,
    pub running_version: IntGaugeVec,
    pub upgrade_state: IntGaugeVec,
    pub upgrade_health: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let b = Builder::new(&registry);
        Ok(Self {
            registry_version: b.gauge(
                "orchestrator_registry_version",
                "Latest local registry version.",
            )?,
            cup_height: b.gauge("orchestrator_cup_height", "Height of the best CUP.")?,
            replica_restarts: b.counter(
                "orchestrator_replica_restarts_total",
                "Replica restarts after an exit.",
            )?,
            downloaded_bytes: b.counter(
                "orchestrator_downloaded_bytes_total",
                "Release package bytes downloaded.",
            )?,
            download_failures: b.counter(
                "orchestrator_download_failures_total",
                "Release package downloads that failed.",
            )?,
            preflight_failures: b.counter(
                "orchestrator_preflight_failures_total",
                "Preflights of a deployed release that failed.",
            )?,
            preflight_seconds: b.seconds_histogram(
                "orchestrator_preflight_duration_seconds",
                "How long a preflight of a deployed release took, the rehearsal process included.",
                &PREFLIGHT_SECONDS_BUCKETS,
            )?,
            webhook_events_dropped: b.counter(
                "orchestrator_webhook_events_dropped_total",
                "Upgrade-step events dropped because a webhook's queue was full.",
            )?,
            upgrades_unhealthy: b.counter(
                "orchestrator_upgrades_unhealthy_total",
                "Switches whose new release was found unhealthy: a crash loop, no CUP above the switch, or no own shares in the chain.",
            )?,
            registry_poll_failures: b.counter(
                "orchestrator_registry_poll_failures_total",
                "Registry polls that failed.",
            )?,
            registry_pages_refused: b.counter(
                "orchestrator_registry_pages_refused_total",
                "Registry pages from an NNS node refused: not certified by the NNS subnet's key, or not what was asked.",
            )?,
            peer_answers_refused: b.counter(
                "orchestrator_peer_answers_refused_total",
                "Peer CUP answers refused at a limit or for a bad signature.",
            )?,
            cup_requests_rate_limited: b.counter(
                "orchestrator_cup_requests_rate_limited_total",
                "CUP requests refused for their requester's budget.",
            )?,
            image_check_seconds: b.float_gauge(
                "orchestrator_image_check_seconds",
                "How long checking the running image's files took at start (0 right after a re-execution).",
            )?,
            last_switch_timestamp_seconds: b.float_gauge(
                "orchestrator_last_switch_timestamp_seconds",
                "When this node last switched releases (Unix time; 0 before any switch). Read from the image links at start, so a re-executed orchestrator keeps it.",
            )?,
            running_version: b.gauge_vec(
                "orchestrator_running_version",
                "The running release: 1 for its version.",
                &["version"],
            )?,
            upgrade_state: b.gauge_vec(
                "orchestrator_upgrade_state",
                "The upgrade state (/status upgrade.state): 1 for the current one.",
                &["state"],
            )?,
            upgrade_health: b.gauge_vec(
                "orchestrator_upgrade_health",
                "The health of the release this process switched to: 1 for the current one (no series before a switch).",
                &["state"],
            )?,
            registry,
        })
    }

    /// Sets the gauges that mirror `/status`.
    pub fn observe(&self, st: &StatusView) {
        self.registry_version.set(st.registry_version.get() as i64);
        self.cup_height
            .set(st.cup.as_ref().map(|c| c.height).unwrap_or(0) as i64);
        self.image_check_seconds
            .set(st.image_check_ms as f64 / 1000.0);
        m::set_info(&self.running_version, &[st.running_version.as_str()]);
        m::set_state(&self.upgrade_state, &Phase::NAMES, st.upgrade.state);
        if let Some(h) = &st.upgrade.health {
            m::set_state(&self.upgrade_health, &HealthState::NAMES, h.state);
        }
    }

    pub fn render(&self) -> Response {
        m::render(&self.registry)
    }
}
