//! What every process's `GET /metrics` shares (the registry server, the orchestrator and
//! the replica): one [`prometheus::Registry`] per process, which owns every metric and
//! renders the text format, so no process writes the exposition by hand.
//!
//! # Conventions
//!
//! Names follow Prometheus's: `<process>_<what>_<unit>`, in base units (`_seconds`,
//! `_bytes`); a counter ends in `_total` (after its unit: `_bytes_total`), nothing else
//! does; a moment in time is a gauge named `_timestamp_seconds` (Unix time); a version or
//! a state is a label of a gauge, never part of a name. A state gauge has one series per
//! state, the current one at 1 and the others at 0 ([`set_state`]), so a dashboard sees
//! a state end as well as begin. `promtool check metrics` accepts every process's
//! output (`tests/tests/orchestrator_upgrade.rs` runs it on all three).

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, core::Collector,
};

/// Builds metrics and registers each in one process's [`Registry`].
#[derive(Debug)]
pub struct Builder<'a> {
    registry: &'a Registry,
}

impl<'a> Builder<'a> {
    pub fn new(registry: &'a Registry) -> Self {
        Self { registry }
    }

    fn add<C: Collector + Clone + 'static>(&self, c: C) -> prometheus::Result<C> {
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    /// A counter; `name` must end in `_total`.
    pub fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.add(IntCounter::new(name, help)?)
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    /// A gauge of a whole number (a height, a count).
    pub fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.add(IntGauge::new(name, help)?)
    }

    /// A gauge of a real number (seconds, a timestamp).
    pub fn float_gauge(&self, name: &str, help: &str) -> prometheus::Result<Gauge> {
        self.add(Gauge::new(name, help)?)
    }

    /// A gauge with labels (a version, a state).
    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    /// A histogram of durations in seconds with these bucket bounds.
    pub fn seconds_histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> prometheus::Result<Histogram> {
        self.add(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        )?)
    }
}

/// Raises `counter` to `total`, a count kept elsewhere (another crate's statistics, an
/// atomic): counters only go up, so a lower total changes nothing.
pub fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// A state set: `current` at 1, every other state of `states` at 0. A `current` outside
/// `states` gets a series of its own.
pub fn set_state(gauge: &IntGaugeVec, states: &[&str], current: &str) {
    for s in states {
        gauge.with_label_values(&[*s]).set(i64::from(*s == current));
    }
    gauge.with_label_values(&[current]).set(1);
}

/// An information gauge: exactly one series, labelled with `values`, at 1 (a change of
/// version removes the old series).
pub fn set_info(gauge: &IntGaugeVec, values: &[&str]) {
    gauge.reset();
    gauge.with_label_values(values).set(1);
}

/// The registry's metrics in Prometheus's text format, as a response.
pub fn render(registry: &Registry) -> Response {
    match TextEncoder::new().encode_to_string(&registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Registry) -> String {
        TextEncoder::new()
            .encode_to_string(&r.gather())
            .unwrap_or_default()
    }

    #[test]
    fn states_and_infos_keep_the_series_a_dashboard_expects() {
        let r = Registry::new();
        let b = Builder::new(&r);
        let state = b
            .gauge_vec("x_upgrade_state", "The state.", &["state"])
            .expect("state");
        let info = b
            .gauge_vec("x_running_version", "The version.", &["version"])
            .expect("info");
        set_state(&state, &["idle", "failed"], "idle");
        set_info(&info, &["1.0.0"]);
        set_state(&state, &["idle", "failed"], "failed");
        set_info(&info, &["2.0.0"]);
        set_info(&info, &["2.0.0"]);
        let t = text(&r);
        assert!(t.contains("x_upgrade_state{state=\"idle\"} 0\n"), "{t}");
        assert!(t.contains("x_upgrade_state{state=\"failed\"} 1\n"), "{t}");
        assert!(
            t.contains("x_running_version{version=\"2.0.0\"} 1\n"),
            "{t}"
        );
        assert!(!t.contains("1.0.0"), "{t}");
    }

    #[test]
    fn a_counter_catches_up_with_a_total_and_never_goes_down() {
        let r = Registry::new();
        let c = Builder::new(&r)
            .counter("x_things_total", "Things.")
            .expect("counter");
        catch_up(&c, 5);
        catch_up(&c, 3);
        assert_eq!(c.get(), 5);
        catch_up(&c, 7);
        assert_eq!(c.get(), 7);
        // A second metric of the same name is refused at registration.
        assert!(
            Builder::new(&r)
                .counter("x_things_total", "Again.")
                .is_err()
        );
    }
}
