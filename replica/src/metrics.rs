//! The replica's `GET /metrics`: every metric lives in one Prometheus registry (the
//! conventions are in `registry::metrics`). The driver counts as it goes; the gauges
//! that mirror `/api/v1/status`, and the transport's own counts, are read in when
//! scraped ([`Metrics::observe`]).

use crate::driver::StatusView;
use axum::response::Response;
use prometheus::{Histogram, IntCounter, IntGauge, IntGaugeVec, Registry};
use registry::metrics::{self as m, Builder};
use transport::TransportStats;

/// Bounds of `replica_block_execution_duration_seconds`'s buckets: an empty block takes
/// microseconds, a full one (2 MiB of updates) tens of milliseconds.
const EXECUTION_SECONDS_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    finalized_height: IntGauge,
    certified_height: IntGauge,
    executed_height: IntGauge,
    cup_height: IntGauge,
    peers_connected: IntGauge,
    halting: IntGauge,
    ingress_pool_messages: IntGauge,
    storage_stalled: IntGauge,
    running_version: IntGaugeVec,
    pub updates_accepted: IntCounter,
    /// Updates accepted here relayed again, still waiting after a while (`driver::relay`).
    pub updates_relayed_again: IntCounter,
    pub updates_refused: IntCounter,
    pub blocks_executed: IntCounter,
    pub block_execution_seconds: Histogram,
    pub messages_executed: IntCounter,
    /// Updates in executed blocks that did not execute (duplicates, expired).
    pub messages_skipped: IntCounter,
    pub checkpoints: IntCounter,
    pub cups_made: IntCounter,
    pub undecodable_messages: IntCounter,
    /// Batches of users' updates relayed to the peers (`driver::relay`).
    pub relay_batches_sent: IntCounter,
    /// Updates from peers' batches that were new here and pooled.
    pub relayed_updates_pooled: IntCounter,
    pub state_syncs: IntCounter,
    /// State-sync chunks that verified and were written.
    pub state_sync_chunks: IntCounter,
    /// State-sync peers dropped (a manifest or chunk that did not verify, or a read past
    /// its limits).
    pub state_sync_peers_dropped: IntCounter,
    pub catch_ups: IntCounter,
    /// Times storage became unavailable (execution stopped until a write succeeded).
    pub storage_stalls: IntCounter,
    transport_sent: IntCounter,
    transport_received: IntCounter,
    transport_dropped: IntCounter,
    transport_bulk_dropped: IntCounter,
    transport_rejected_connections: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let b = Builder::new(&registry);
        Ok(Self {
            finalized_height: b.gauge("replica_finalized_height", "Finalized height.")?,
            certified_height: b.gauge("replica_certified_height", "Certified height.")?,
            executed_height: b.gauge("replica_executed_height", "Executed height.")?,
            cup_height: b.gauge("replica_cup_height", "Height of the latest CUP.")?,
            peers_connected: b.gauge("replica_peers_connected", "Peers with a live connection.")?,
            halting: b.gauge("replica_halting", "1 while the subnet halts for an upgrade.")?,
            ingress_pool_messages: b.gauge("replica_ingress_pool_messages", "Updates waiting.")?,
            storage_stalled: b.gauge(
                "replica_storage_stalled",
                "1 while storage is unavailable (see storage_error in /api/v1/status).",
            )?,
            running_version: b.gauge_vec(
                "replica_running_version",
                "The replica version this process runs and its release build: 1.",
                &["version", "release"],
            )?,
            updates_accepted: b.counter("replica_updates_accepted_total", "Updates accepted.")?,
            updates_relayed_again: b.counter(
                "replica_updates_relayed_again_total",
                "Updates accepted here and relayed to the peers again, still waiting in the pool.",
            )?,
            updates_refused: b.counter("replica_updates_refused_total", "Updates refused.")?,
            blocks_executed: b.counter("replica_blocks_executed_total", "Blocks executed.")?,
            block_execution_seconds: b.seconds_histogram(
                "replica_block_execution_duration_seconds",
                "Time to execute a finalized block and write its state.",
                &EXECUTION_SECONDS_BUCKETS,
            )?,
            messages_executed: b.counter("replica_messages_executed_total", "Updates executed.")?,
            messages_skipped: b.counter(
                "replica_messages_skipped_total",
                "Updates in executed blocks that did not execute (duplicates, expired).",
            )?,
            checkpoints: b.counter("replica_checkpoints_total", "State checkpoints made.")?,
            cups_made: b.counter("replica_cups_made_total", "CUPs made.")?,
            undecodable_messages: b.counter(
                "replica_undecodable_messages_total",
                "Peer messages that did not decode.",
            )?,
            relay_batches_sent: b.counter(
                "replica_relay_batches_sent_total",
                "Batches of users' updates relayed to the peers over the transport.",
            )?,
            relayed_updates_pooled: b.counter(
                "replica_relayed_updates_pooled_total",
                "Updates from peers' relay batches that were new here and pooled.",
            )?,
            state_syncs: b.counter(
                "replica_state_syncs_total",
                "States fetched from peers and verified against a CUP.",
            )?,
            state_sync_chunks: b.counter(
                "replica_state_sync_chunks_total",
                "State-sync chunks that verified against their manifest and were written.",
            )?,
            state_sync_peers_dropped: b.counter(
                "replica_state_sync_peers_dropped_total",
                "State-sync peers dropped at a manifest or chunk that did not verify, or a read past its limits.",
            )?,
            catch_ups: b.counter(
                "replica_catch_ups_total",
                "Restarts of consensus from a peer's CUP.",
            )?,
            storage_stalls: b.counter(
                "replica_storage_stalls_total",
                "Times storage became unavailable (execution and signing paused until a write succeeded).",
            )?,
            transport_sent: b.counter("replica_transport_sent_total", "Messages sent to peers.")?,
            transport_received: b.counter(
                "replica_transport_received_total",
                "Messages received from peers.",
            )?,
            transport_dropped: b.counter(
                "replica_transport_dropped_total",
                "Messages dropped on full peer queues.",
            )?,
            transport_bulk_dropped: b.counter(
                "replica_transport_relay_dropped_total",
                "Relay batches dropped on full peer queues (the peers get the updates from blocks).",
            )?,
            transport_rejected_connections: b.counter(
                "replica_transport_rejected_connections_total",
                "Connections refused (not a member).",
            )?,
            registry,
        })
    }

    /// Sets the gauges that mirror the status, and the transport's counts.
    pub fn observe(&self, s: &StatusView, t: &TransportStats) {
        self.finalized_height.set(s.finalized_height as i64);
        self.certified_height.set(s.certified_height as i64);
        self.executed_height.set(s.executed_height as i64);
        self.cup_height.set(s.cup_height as i64);
        self.peers_connected.set(s.peers_connected as i64);
        self.halting.set(i64::from(s.halting));
        self.ingress_pool_messages.set(s.ingress_pool as i64);
        self.storage_stalled
            .set(i64::from(s.storage_error.is_some()));
        m::set_info(
            &self.running_version,
            &[s.replica_version.as_str(), crate::RELEASE],
        );
        m::catch_up(&self.transport_sent, t.messages_sent);
        m::catch_up(&self.transport_received, t.messages_received);
        m::catch_up(&self.transport_dropped, t.dropped_queue_full);
        m::catch_up(&self.transport_bulk_dropped, t.dropped_bulk_queue_full);
        m::catch_up(&self.transport_rejected_connections, t.rejected_connections);
    }

    pub fn render(&self) -> Response {
        m::render(&self.registry)
    }
}
