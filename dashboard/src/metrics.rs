//! The dashboard's own `/metrics` (Prometheus text, base units): how its refreshes go.

use crate::{
    answers::NodeAnswers,
    overview::{Overview, Reachability},
};
use prometheus::{
    Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    refreshes: IntCounter,
    registry_failures: IntCounter,
    node_failures: IntCounterVec,
    refresh_seconds: Gauge,
    registry_reachable: IntGauge,
    nodes: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let refreshes = IntCounter::new("dashboard_refreshes_total", "Refreshes done.")?;
        let registry_failures = IntCounter::new(
            "dashboard_registry_reads_failed_total",
            "Refreshes whose registry read failed or timed out.",
        )?;
        let node_failures = IntCounterVec::new(
            Opts::new(
                "dashboard_node_reads_failed_total",
                "Node status reads that failed or timed out, by endpoint.",
            ),
            &["endpoint"],
        )?;
        let refresh_seconds = Gauge::new(
            "dashboard_refresh_duration_seconds",
            "How long the latest refresh took.",
        )?;
        let registry_reachable = IntGauge::new(
            "dashboard_registry_reachable",
            "1 if the latest registry read succeeded.",
        )?;
        let nodes = IntGaugeVec::new(
            Opts::new("dashboard_nodes", "Known nodes by reachability."),
            &["reachability"],
        )?;
        registry.register(Box::new(refreshes.clone()))?;
        registry.register(Box::new(registry_failures.clone()))?;
        registry.register(Box::new(node_failures.clone()))?;
        registry.register(Box::new(refresh_seconds.clone()))?;
        registry.register(Box::new(registry_reachable.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        Ok(Self {
            registry,
            refreshes,
            registry_failures,
            node_failures,
            refresh_seconds,
            registry_reachable,
            nodes,
        })
    }

    /// Counts one refresh's failed node reads.
    pub fn count_answers(&self, answers: &[NodeAnswers]) {
        for a in answers {
            if a.replica.is_err() {
                self.node_failures.with_label_values(&["replica"]).inc();
            }
            if a.orchestrator.is_err() {
                self.node_failures
                    .with_label_values(&["orchestrator"])
                    .inc();
            }
        }
    }

    /// Counts one refresh: the overview made of its answers, and its duration.
    pub fn record(&self, o: &Overview, took: Duration) {
        self.refreshes.inc();
        if !o.registry.reachable {
            self.registry_failures.inc();
        }
        self.registry_reachable.set(i64::from(o.registry.reachable));
        for r in Reachability::ALL {
            let count = o.nodes.iter().filter(|n| n.reachability == r).count();
            self.nodes.with_label_values(&[r.name()]).set(count as i64);
        }
        self.refresh_seconds.set(took.as_secs_f64());
    }

    pub fn text(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::overview::Watcher;
    use types::NodeId;

    #[test]
    fn a_refresh_is_counted() {
        let m = Metrics::new().unwrap();
        let mut w = Watcher::new("http://registry", false);
        let down = NodeAnswers {
            node_id: NodeId([1; 32]),
            replica: Err("cannot connect".into()),
            orchestrator: Err("cannot connect".into()),
        };
        m.count_answers(std::slice::from_ref(&down));
        let o = w.observe(0, Err("cannot connect".into()), vec![down]);
        m.record(&o, Duration::from_millis(1500));
        let text = m.text().unwrap();
        for line in [
            "dashboard_refreshes_total 1",
            "dashboard_registry_reads_failed_total 1",
            "dashboard_registry_reachable 0",
            "dashboard_node_reads_failed_total{endpoint=\"replica\"} 1",
            "dashboard_node_reads_failed_total{endpoint=\"orchestrator\"} 1",
            "dashboard_refresh_duration_seconds 1.5",
            "dashboard_nodes{reachability=\"up\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
