//! When the driver tries a pending catch-up again, and when it gives up: a small state
//! machine that takes the time as an argument, so its rules are tested without waiting.

use super::{CATCH_UP_PATIENCE, CATCH_UP_RETRY};
use std::time::Instant;

/// A peer's CUP to catch up to once storage allows (a catch-up writes a whole state),
/// with the timing of its retries. `T` is the CUP (its content and signature).
pub(super) struct PendingCatchUp<T> {
    target: Option<T>,
    /// Not before then is it tried again (its last try found no peer with that state).
    not_before: Option<Instant>,
    /// Since when catching up has failed for want of a peer with the state, over every
    /// target since the last success.
    failing_since: Option<Instant>,
}

/// What to do after no peer could serve the state a catch-up needed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AfterNoPeer {
    /// Try again then (or sooner, for a newer CUP).
    RetryAt(Instant),
    /// Catching up has failed for [`CATCH_UP_PATIENCE`]: end the replica, so that its
    /// orchestrator starts it again from the newest CUP it can find.
    GiveUp,
}

impl<T> Default for PendingCatchUp<T> {
    fn default() -> Self {
        Self {
            target: None,
            not_before: None,
            failing_since: None,
        }
    }
}

impl<T> PendingCatchUp<T> {
    /// A peer's CUP to catch up to, replacing any older one: tried at the next chance,
    /// whatever the last try found. The patience keeps counting from the first failure.
    pub(super) fn offer(&mut self, target: T) {
        self.target = Some(target);
        self.not_before = None;
    }

    pub(super) fn is_pending(&self) -> bool {
        self.target.is_some()
    }

    /// The target, taken out, if there is one and its retry time has come at `now`.
    /// Whatever becomes of the try is reported with one of the three calls below.
    pub(super) fn due(&mut self, now: Instant) -> Option<T> {
        if self.not_before.is_some_and(|t| now < t) {
            return None;
        }
        self.target.take()
    }

    /// The catch-up succeeded.
    pub(super) fn succeeded(&mut self) {
        self.not_before = None;
        self.failing_since = None;
    }

    /// The catch-up could not write for want of storage: it waits for storage, not for
    /// a timer.
    pub(super) fn wait_for_storage(&mut self, target: T) {
        self.target = Some(target);
    }

    /// No peer could serve the state `target` names, found at `now`.
    pub(super) fn no_peer_served(&mut self, target: T, now: Instant) -> AfterNoPeer {
        let since = *self.failing_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= CATCH_UP_PATIENCE {
            return AfterNoPeer::GiveUp;
        }
        let at = now + CATCH_UP_RETRY;
        self.target = Some(target);
        self.not_before = Some(at);
        AfterNoPeer::RetryAt(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A CUP, by its height.
    fn target(height: u64) -> u64 {
        height
    }

    fn height(t: &u64) -> u64 {
        *t
    }

    #[test]
    fn a_target_no_peer_serves_is_retried_after_the_retry_time_until_patience_runs_out() {
        let t0 = Instant::now();
        let mut p = PendingCatchUp::<u64>::default();
        assert!(!p.is_pending());
        assert!(p.due(t0).is_none());
        p.offer(target(60));
        let mut now = t0;
        loop {
            let t = p.due(now).expect("due");
            match p.no_peer_served(t, now) {
                AfterNoPeer::RetryAt(at) => {
                    assert_eq!(at, now + CATCH_UP_RETRY);
                    assert!(p.is_pending(), "kept for the retry");
                    assert!(p.due(at - Duration::from_millis(1)).is_none(), "not before");
                    now = at;
                }
                AfterNoPeer::GiveUp => break,
            }
        }
        assert_eq!(
            now.duration_since(t0),
            CATCH_UP_PATIENCE,
            "gives up at patience"
        );
    }

    #[test]
    fn a_newer_cup_is_tried_at_once_but_the_patience_counts_from_the_first_failure() {
        let t0 = Instant::now();
        let mut p = PendingCatchUp::<u64>::default();
        p.offer(target(60));
        let t = p.due(t0).expect("due");
        assert!(matches!(p.no_peer_served(t, t0), AfterNoPeer::RetryAt(_)));
        let later = t0 + Duration::from_millis(10);
        assert!(p.due(later).is_none(), "waiting for the retry");
        p.offer(target(70));
        let t = p.due(later).expect("a newer CUP is due at once");
        assert_eq!(height(&t), 70);
        let end = t0 + CATCH_UP_PATIENCE;
        assert_eq!(p.no_peer_served(t, end), AfterNoPeer::GiveUp);
    }

    #[test]
    fn success_resets_the_patience_and_storage_waits_keep_the_target_due() {
        let t0 = Instant::now();
        let mut p = PendingCatchUp::<u64>::default();
        p.offer(target(60));
        let t = p.due(t0).expect("due");
        let _ = p.no_peer_served(t, t0);
        let t1 = t0 + CATCH_UP_RETRY;
        let t = p.due(t1).expect("due after the retry time");
        p.wait_for_storage(t);
        assert_eq!(p.due(t1).map(|t| height(&t)), Some(60), "no new timer");
        p.succeeded();
        // A failure long after the success starts a new count.
        let t2 = t0 + 2 * CATCH_UP_PATIENCE;
        p.offer(target(80));
        let t = p.due(t2).expect("due");
        assert!(matches!(p.no_peer_served(t, t2), AfterNoPeer::RetryAt(_)));
    }
}
