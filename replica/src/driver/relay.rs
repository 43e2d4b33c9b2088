//! Users' updates, accepted here, relayed to the peers in batches over the transport (its
//! bulk class: written only when no artifact waits), so that whichever member makes the
//! next block can carry them; otherwise an update waits for this node's turn (on average
//! n blocks). A batch leaves when it holds [`MAX_BATCH_UPDATES`] updates or
//! [`MAX_BATCH_BYTES`], or [`RELAY_DELAY`] after its first update. A received batch is
//! validated update by update like any submission (signature, network, expiry, quotas)
//! and never relayed on by the peer. A batch is best effort (a peer that is not connected
//! yet misses it), so an update accepted here that is still waiting in the pool
//! [`RELAY_AGAIN_AFTER`] later is relayed again, until a block carries it or it expires:
//! a node that accepts updates while it cannot make blocks itself (just restarted, still
//! catching up) still gets them into some peer's block.

use super::{Driver, UpdateRefused};
use crate::{
    ingress::{IngressError, Operation, SignedIngress},
    now_ns,
    wire::{self, IngressBatch},
};
use std::{collections::VecDeque, time::Duration};
use tokio::time::Instant;
use types::CryptoHash;

/// The longest an accepted update waits for its batch to fill.
pub const RELAY_DELAY: Duration = Duration::from_millis(5);
/// A batch leaves at this many updates...
pub const MAX_BATCH_UPDATES: usize = 1_000;
/// ... or this many bytes of them (well within [`wire::MAX_INGRESS_BATCH_BYTES`]).
pub const MAX_BATCH_BYTES: usize = wire::MAX_INGRESS_BATCH_BYTES / 2;
/// An update's bytes besides its key and value (sender, signature, nonce, expiry),
/// about.
const ENVELOPE_BYTES: usize = 160;
/// The most updates taken from one received batch (a peer's batch is no bigger).
const MAX_RECEIVED_UPDATES: usize = MAX_BATCH_UPDATES;

/// How long an update accepted here may wait in the pool before it is relayed again.
pub const RELAY_AGAIN_AFTER: Duration = Duration::from_secs(2);
/// The most updates whose relay is tracked (the pool holds no more than this anyway).
const MAX_TRACKED: usize = crate::driver::MAX_INGRESS_MESSAGES;

/// The updates accepted here from users, oldest first, each with when to relay it again
/// if it is still in the pool then.
#[derive(Debug, Default)]
pub(super) struct Again {
    due: VecDeque<(Instant, CryptoHash)>,
}

impl Again {
    fn track(&mut self, id: CryptoHash, now: Instant) {
        if self.due.len() >= MAX_TRACKED {
            self.due.pop_front();
        }
        self.due.push_back((now + RELAY_AGAIN_AFTER, id));
    }

    /// The ids due at `now` that `waiting` still holds (at most `max`); each is tracked
    /// again for one more period. The others are forgotten: executed or expired.
    fn take_due(
        &mut self,
        now: Instant,
        max: usize,
        waiting: impl Fn(&CryptoHash) -> bool,
    ) -> Vec<CryptoHash> {
        let mut again = Vec::new();
        while again.len() < max
            && let Some(&(due, id)) = self.due.front()
            && due <= now
        {
            self.due.pop_front();
            if waiting(&id) {
                again.push(id);
            }
        }
        for id in &again {
            self.due.push_back((now + RELAY_AGAIN_AFTER, *id));
        }
        again
    }
}

/// The batch being filled.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    updates: Vec<SignedIngress>,
    bytes: usize,
    due: Option<Instant>,
}

impl Outgoing {
    /// When the batch must leave (none while empty).
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Adds an update; true when the batch is full.
    fn push(&mut self, m: SignedIngress, size: usize, now: Instant) -> bool {
        self.due.get_or_insert(now + RELAY_DELAY);
        self.updates.push(m);
        self.bytes += size;
        self.updates.len() >= MAX_BATCH_UPDATES || self.bytes >= MAX_BATCH_BYTES
    }

    fn take(&mut self) -> Vec<SignedIngress> {
        self.due = None;
        self.bytes = 0;
        std::mem::take(&mut self.updates)
    }
}

impl Driver {
    /// A user's update: checked and pooled, then queued for the peers.
    pub(super) fn accept_from_user(
        &mut self,
        m: SignedIngress,
    ) -> Result<CryptoHash, UpdateRefused> {
        let relay = m.clone();
        let id = self.accept_update(m)?;
        let now = Instant::now();
        self.relay_again.track(id, now);
        self.queue_for_peers(relay, now);
        Ok(id)
    }

    /// Relays again the updates accepted here that are still waiting
    /// ([`RELAY_AGAIN_AFTER`]).
    pub(super) fn relay_waiting_again(&mut self) {
        let now = Instant::now();
        let ingress = &self.ingress;
        let due = self
            .relay_again
            .take_due(now, MAX_BATCH_UPDATES, |id| ingress.contains(id));
        for id in due {
            if let Some(m) = self.ingress.get(&id).cloned() {
                self.metrics.updates_relayed_again.inc();
                self.queue_for_peers(m, now);
            }
        }
    }

    fn queue_for_peers(&mut self, relay: SignedIngress, now: Instant) {
        // The batch bound needs no exact size: no need to encode the update again.
        let size = match &relay.ingress.operation {
            Operation::Put { key, value } | Operation::Append { key, value } => {
                key.len() + value.len()
            }
            Operation::Delete { key } => key.len(),
            Operation::Propose { submission: call } | Operation::Vote { ballot: call } => {
                call.len()
            }
        } + ENVELOPE_BYTES;
        if self.outgoing.push(relay, size, now) {
            self.flush_relay();
        }
    }

    /// Sends the batch being filled, if any.
    pub(super) fn flush_relay(&mut self) {
        let updates = self.outgoing.take();
        if updates.is_empty() {
            return;
        }
        self.metrics.relay_batches_sent.inc();
        let batch = IngressBatch {
            version: self.version.clone(),
            updates,
        };
        self.transport.broadcast_bulk(wire::encode_ingress(&batch));
    }

    /// A peer's batch: each update pooled as if a user had sent it here, none relayed.
    pub(super) fn on_ingress_batch(&mut self, batch: IngressBatch) {
        if batch.version != self.version {
            self.metrics.undecodable_messages.inc();
            return;
        }
        for m in batch.updates.into_iter().take(MAX_RECEIVED_UPDATES) {
            // Refused (already here, from the user or a block, or invalid) is the outcome
            // a direct submission would have had.
            if self.accept_update(m).is_ok() {
                self.metrics.relayed_updates_pooled.inc();
            }
        }
    }

    /// Whether this node's subnet is an NNS subnet (keeps the registry and executes
    /// governance calls), as the registry says.
    pub(super) fn is_nns(&self) -> bool {
        matches!(
            self.subnet.record.subnet_kind(),
            registry::records::SubnetKind::Nns { .. }
        )
    }

    /// Checks an update and pools it: refused while the subnet upgrades, when executed
    /// already or over its sender's quota, or invalid.
    pub(super) fn accept_update(&mut self, m: SignedIngress) -> Result<CryptoHash, UpdateRefused> {
        let id = m.id();
        let done = self
            .state
            .as_ref()
            .is_some_and(|s| s.has_executed(&id).unwrap_or(false));
        let result = if self.core.is_halting() || self.core.is_halted() {
            Err(UpdateRefused::Upgrading)
        } else if done {
            // Executed already (a late relay, or a user's retry).
            Err(UpdateRefused::Invalid(IngressError::Duplicate(id)))
        } else if m.ingress.operation.is_governance() && !self.is_nns() {
            // Execution here would skip it: only an NNS subnet keeps the registry. (The
            // subnet's kind decides, not the state: an NNS node whose state is still
            // being synced after a restart takes calls, which execute once in a block.)
            Err(UpdateRefused::Invalid(IngressError::NotNns(
                m.ingress.operation.method(),
            )))
        } else if let Some(e) = self.over_quota(&m) {
            // Execution would skip it: say so now rather than accept it.
            Err(UpdateRefused::Invalid(e))
        } else {
            // `insert` validates (signature, expiry, sizes): once is enough.
            self.ingress
                .insert(m, now_ns())
                .map_err(UpdateRefused::Invalid)
        };
        match &result {
            Ok(_) => {
                self.metrics.updates_accepted.inc();
                self.payload_dirty = true;
            }
            Err(_) => self.metrics.updates_refused.inc(),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_due_after_its_first_update_and_full_at_its_bounds() {
        let m =
            |i: u64| crate::ingress::signed_for_test(3, i, Operation::Delete { key: "k".into() });
        let mut o = Outgoing::default();
        assert_eq!(o.due(), None);
        let t0 = Instant::now();
        assert!(!o.push(m(0), 100, t0));
        assert_eq!(o.due(), Some(t0 + RELAY_DELAY));
        // A later update does not push the deadline back.
        assert!(!o.push(m(1), 100, t0 + Duration::from_millis(3)));
        assert_eq!(o.due(), Some(t0 + RELAY_DELAY));
        assert_eq!(o.take().len(), 2);
        assert_eq!(o.due(), None);
        // Full by bytes, then by count.
        assert!(o.push(m(2), MAX_BATCH_BYTES, t0));
        o.take();
        for i in 0..MAX_BATCH_UPDATES as u64 - 1 {
            assert!(!o.push(m(i), 1, t0));
        }
        assert!(o.push(m(0), 1, t0));
    }

    #[test]
    fn an_update_still_waiting_is_relayed_again_each_period_until_it_leaves_the_pool() {
        let id = |i: u8| CryptoHash([i; 32]);
        let mut a = Again::default();
        let t0 = Instant::now();
        a.track(id(1), t0);
        a.track(id(2), t0 + Duration::from_millis(500));
        // Not due yet.
        assert!(a.take_due(t0, 10, |_| true).is_empty());
        // One period on: the first is due, the second not yet.
        let t1 = t0 + RELAY_AGAIN_AFTER;
        assert_eq!(a.take_due(t1, 10, |_| true), [id(1)]);
        // Still waiting one more period on: again. The second left the pool: forgotten.
        let t2 = t1 + RELAY_AGAIN_AFTER;
        assert_eq!(a.take_due(t2, 10, |i| *i == id(1)), [id(1)]);
        assert_eq!(a.due.len(), 1);
        // Executed: forgotten, never relayed again.
        assert!(a.take_due(t2 + RELAY_AGAIN_AFTER, 10, |_| false).is_empty());
        assert!(a.due.is_empty());
        // At most `max` a call; the rest stay due for the next.
        for i in 0..5 {
            a.track(id(i), t0);
        }
        assert_eq!(a.take_due(t1, 3, |_| true).len(), 3);
        assert_eq!(a.take_due(t1, 3, |_| true).len(), 2);
    }
}
