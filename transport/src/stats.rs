//! Counters, readable at any time through `Transport::stats`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the transport's counters since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages written into a connection (not necessarily delivered: see the crate docs).
    pub messages_sent: u64,
    /// Messages handed to the receiver, each from an authenticated member.
    pub messages_received: u64,
    /// Oldest messages dropped because a peer's queue was full.
    pub dropped_queue_full: u64,
    /// The same for the bulk class (`Transport::broadcast_bulk`).
    pub dropped_bulk_queue_full: u64,
    /// Messages `send`/`broadcast` refused as longer than `max_message_bytes`.
    pub dropped_oversize: u64,
    /// Messages for a node that is not a current member (or is this node).
    pub dropped_unknown_peer: u64,
    /// Incoming frames announcing more than `max_message_bytes`; each closed its
    /// connection.
    pub oversize_received: u64,
    /// Incoming handshakes refused because the client's key is not a current member's.
    pub rejected_connections: u64,
    /// Outgoing handshakes refused because the dialed node presented a key other than its
    /// registry key.
    pub rejected_servers: u64,
    /// Incoming connections refused because [`crate::MAX_INCOMING_CONNECTIONS`] were open.
    pub refused_over_capacity: u64,
    /// Outgoing connections established and admitted by the peer.
    pub connections_established: u64,
    /// Of those, the ones to a peer after an earlier connection to it had ended.
    pub reconnects: u64,
    /// Dial attempts that failed, for any reason.
    pub connect_failures: u64,
    /// Handshakes abandoned (or backoffs cut short) because the peer connected to this
    /// node meanwhile, and dialed again at once.
    pub dials_kicked: u64,
    /// Should not happen, survived: a connection the verifier accepted whose peer could
    /// not be identified afterwards, or that negotiated another protocol.
    pub critical_error_unidentified_peer: u64,
}

/// The live counters behind [`TransportStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub messages_sent: Counter,
    pub messages_received: Counter,
    pub dropped_queue_full: Counter,
    pub dropped_bulk_queue_full: Counter,
    pub dropped_oversize: Counter,
    pub dropped_unknown_peer: Counter,
    pub oversize_received: Counter,
    pub rejected_connections: Counter,
    pub rejected_servers: Counter,
    pub refused_over_capacity: Counter,
    pub connections_established: Counter,
    pub reconnects: Counter,
    pub connect_failures: Counter,
    pub dials_kicked: Counter,
    pub critical_error_unidentified_peer: Counter,
}

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(&self) {
        self.add(1);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransportStats {
        TransportStats {
            messages_sent: self.messages_sent.get(),
            messages_received: self.messages_received.get(),
            dropped_queue_full: self.dropped_queue_full.get(),
            dropped_bulk_queue_full: self.dropped_bulk_queue_full.get(),
            dropped_oversize: self.dropped_oversize.get(),
            dropped_unknown_peer: self.dropped_unknown_peer.get(),
            oversize_received: self.oversize_received.get(),
            rejected_connections: self.rejected_connections.get(),
            rejected_servers: self.rejected_servers.get(),
            refused_over_capacity: self.refused_over_capacity.get(),
            connections_established: self.connections_established.get(),
            reconnects: self.reconnects.get(),
            connect_failures: self.connect_failures.get(),
            dials_kicked: self.dials_kicked.get(),
            critical_error_unidentified_peer: self.critical_error_unidentified_peer.get(),
        }
    }
}
