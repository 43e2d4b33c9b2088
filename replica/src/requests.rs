//! What became of an update: `GET /api/v1/request_status?id=…[&wait_ms=…]`.
//!
//! A user who submitted an update holds its message id. This node remembers, for the
//! newest [`MAX_TRACKED`] updates it executed, the height that executed each one; an
//! update is *certified* once the subnet has certified that height (its effect is then in
//! a certified state: the finality a user can rely on). A request may wait for that,
//! which is how a client measures finality without polling.
//!
//! Local knowledge, not replicated state: a node that joined by state sync, or restarted
//! into a new release, does not know the updates it did not execute itself.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use tokio::sync::oneshot;
use types::{CryptoHash, Height};

/// Executed updates remembered (the newest).
pub const MAX_TRACKED: usize = 200_000;
/// Requests waiting for certification at once; more are answered at once.
pub const MAX_WAITING: usize = 10_000;
/// The longest `wait_ms` a request may ask for.
pub const MAX_WAIT_MS: u64 = 60_000;

/// What became of an update, as one node knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// This node does not know it.
    Unknown,
    /// In this node's pool.
    Received,
    /// In a finalized block this node executed; its state not yet certified.
    Executed,
    Certified,
}

/// The answer to `GET /api/v1/request_status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStatus {
    pub message_id: String,
    pub status: RequestState,
    /// The height that executed it (`executed` and `certified`).
    pub height: Option<u64>,
    /// A governance call's outcome on an NNS subnet, once executed (and until the
    /// message expires): see `state::nns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<registry::governance::GovernanceReply>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    executed: HashMap<CryptoHash, Height>,
    order: VecDeque<CryptoHash>,
    certified: Height,
    waiting: HashMap<CryptoHash, Vec<oneshot::Sender<RequestStatus>>>,
    waiting_count: usize,
}

impl Tracker {
    pub fn new(certified: Height) -> Self {
        Self {
            certified,
            ..Self::default()
        }
    }

    /// The updates a finalized block at `height` executed.
    pub fn executed(&mut self, height: Height, ids: &[CryptoHash]) {
        for id in ids {
            if self.executed.insert(*id, height).is_none() {
                self.order.push_back(*id);
            }
        }
        while self.order.len() > MAX_TRACKED {
            if let Some(old) = self.order.pop_front() {
                self.executed.remove(&old);
            }
        }
    }

    /// The subnet certified `height`: answers the requests waiting for an update
    /// executed at or below it.
    /// `enrich` adds what the tracker does not know to each answer (a governance reply).
    pub fn certified(&mut self, height: Height, enrich: impl Fn(&mut RequestStatus)) {
        self.certified = self.certified.max(height);
        let ready: Vec<CryptoHash> = self
            .waiting
            .keys()
            .filter(|id| self.executed.get(id).is_some_and(|h| *h <= self.certified))
            .copied()
            .collect();
        for id in ready {
            let mut answer = self.status(&id, false);
            enrich(&mut answer);
            for reply in self.waiting.remove(&id).unwrap_or_default() {
                self.waiting_count -= 1;
                let _ = reply.send(answer.clone());
            }
        }
        // Requests whose client gave up.
        self.waiting.retain(|_, replies| {
            replies.retain(|r| !r.is_closed());
            !replies.is_empty()
        });
        self.waiting_count = self.waiting.values().map(Vec::len).sum();
    }

    pub fn status(&self, id: &CryptoHash, in_pool: bool) -> RequestStatus {
        let height = self.executed.get(id).copied();
        let status = match height {
            Some(h) if h <= self.certified => RequestState::Certified,
            Some(_) => RequestState::Executed,
            None if in_pool => RequestState::Received,
            None => RequestState::Unknown,
        };
        RequestStatus {
            message_id: id.to_string(),
            status,
            height: height.map(Height::get),
            governance: None,
        }
    }

    /// The newest height the subnet certified, as far as this node knows.
    pub fn certified_height(&self) -> Height {
        self.certified
    }

    /// Answers `now` (what the caller knows of `id` now) if it is certified (or too many
    /// wait); otherwise waits until it is.
    pub fn wait(
        &mut self,
        id: CryptoHash,
        now: RequestStatus,
        reply: oneshot::Sender<RequestStatus>,
    ) {
        if now.status == RequestState::Certified || self.waiting_count >= MAX_WAITING {
            let _ = reply.send(now);
            return;
        }
        self.waiting_count += 1;
        self.waiting.entry(id).or_default().push(reply);
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.executed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::domain;

    fn id(i: u64) -> CryptoHash {
        CryptoHash::of(domain::INGRESS, &i.to_be_bytes())
    }

    #[test]
    fn an_update_goes_from_unknown_to_received_to_executed_to_certified() {
        let mut t = Tracker::new(Height::new(3));
        assert_eq!(t.status(&id(1), false).status, RequestState::Unknown);
        assert_eq!(t.status(&id(1), true).status, RequestState::Received);
        t.executed(Height::new(5), &[id(1)]);
        let s = t.status(&id(1), false);
        assert_eq!((s.status, s.height), (RequestState::Executed, Some(5)));
        t.certified(Height::new(4), |_| ());
        assert_eq!(t.status(&id(1), false).status, RequestState::Executed);
        t.certified(Height::new(5), |_| ());
        let s = t.status(&id(1), false);
        assert_eq!((s.status, s.height), (RequestState::Certified, Some(5)));
        assert_eq!(s.message_id, id(1).to_string());
    }

    #[test]
    fn a_waiting_request_is_answered_when_its_height_is_certified() {
        let mut t = Tracker::new(Height::ZERO);
        let (tx, mut rx) = oneshot::channel();
        t.wait(id(1), t.status(&id(1), true), tx);
        t.executed(Height::new(2), &[id(1)]);
        t.certified(Height::new(1), |_| ());
        assert!(
            rx.try_recv().is_err(),
            "answered before its height was certified"
        );
        t.certified(Height::new(2), |_| ());
        let got = rx.try_recv().expect("answered");
        assert_eq!((got.status, got.height), (RequestState::Certified, Some(2)));
        // A certified update is answered at once.
        let (tx, mut rx) = oneshot::channel();
        t.wait(id(1), t.status(&id(1), false), tx);
        assert_eq!(
            rx.try_recv().expect("at once").status,
            RequestState::Certified
        );
    }

    #[test]
    fn abandoned_waits_are_dropped_and_the_bounds_hold() {
        let mut t = Tracker::new(Height::ZERO);
        for i in 0..MAX_WAITING as u64 {
            let (tx, rx) = oneshot::channel();
            t.wait(id(i), t.status(&id(i), false), tx);
            drop(rx);
        }
        // Full: the next one is answered at once with what is known.
        let (tx, mut rx) = oneshot::channel();
        t.wait(id(u64::MAX), t.status(&id(u64::MAX), true), tx);
        assert_eq!(
            rx.try_recv().expect("at once").status,
            RequestState::Received
        );
        // A certification sweeps the abandoned ones, and waiting works again.
        t.certified(Height::new(1), |_| ());
        let (tx, mut rx) = oneshot::channel();
        t.wait(id(u64::MAX), t.status(&id(u64::MAX), true), tx);
        assert!(rx.try_recv().is_err());
        // Executed ids are remembered up to the bound, newest kept.
        let ids: Vec<_> = (0..MAX_TRACKED as u64 + 10).map(id).collect();
        t.executed(Height::new(2), &ids);
        assert_eq!(t.remembered(), MAX_TRACKED);
        assert_eq!(t.status(&ids[0], false).status, RequestState::Unknown);
        assert_eq!(
            t.status(ids.last().expect("ids"), false).status,
            RequestState::Executed
        );
    }
}
