//! Per-requester token buckets for the CUP endpoint: pure (time is an argument).
//!
//! A signed CUP request carries no timestamp (a node whose clock is off must still be
//! answered), so a captured one can be replayed at will. What a replay gains is an answer
//! bound to a nonce the real requester no longer waits for, which it cannot use, and work
//! for this node (a signature per answer). The buckets bound that work: each member has
//! its own budget, so a replayer spends only the budget of the member whose request it
//! captured, and unsigned (public) reads share one budget of their own.

use std::collections::BTreeMap;
use types::NodeId;

/// Who is asking, for the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Requester {
    Member(NodeId),
    /// Every unsigned read, together.
    Public,
}

/// A bucket's size and refill rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
    /// Requests allowed per second, on average.
    pub per_s: u32,
}

/// A member asks once per orchestrator tick (at most every 10 ms by node.toml's bounds,
/// 1 s by default) and backs off after a failure: room for a few rounds at once.
pub const MEMBER_BUDGET: Budget = Budget {
    burst: 20,
    per_s: 10,
};
/// Unsigned reads are for operators and tools: a few per second, all of them together.
pub const PUBLIC_BUDGET: Budget = Budget {
    burst: 20,
    per_s: 5,
};
/// The most buckets kept; the one used longest ago goes first. Members are the only
/// signed requesters accepted, so this bounds nothing a subnet needs.
pub const MAX_BUCKETS: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Thousandths of a request, so that refills of less than one request add up.
    milli_tokens: u64,
    last_ms: u64,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: BTreeMap<Requester, Bucket>,
}

impl RateLimiter {
    /// Whether `who` may be answered at `now_ms` (a monotonic clock in ms); takes one
    /// request from its bucket if so.
    pub fn allow(&mut self, who: Requester, now_ms: u64) -> bool {
        let budget = match who {
            Requester::Member(_) => MEMBER_BUDGET,
            Requester::Public => PUBLIC_BUDGET,
        };
        let full = u64::from(budget.burst) * 1000;
        if !self.buckets.contains_key(&who) && self.buckets.len() >= MAX_BUCKETS {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last_ms)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.buckets.remove(&k);
            }
        }
        let b = self.buckets.entry(who).or_insert(Bucket {
            milli_tokens: full,
            last_ms: now_ms,
        });
        let elapsed_ms = now_ms.saturating_sub(b.last_ms);
        b.milli_tokens = (b.milli_tokens + elapsed_ms * u64::from(budget.per_s)).min(full);
        b.last_ms = b.last_ms.max(now_ms);
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Forgets the members that left (their buckets would only take room).
    pub fn retain_members(&mut self, is_member: impl Fn(&NodeId) -> bool) {
        self.buckets.retain(|k, _| match k {
            Requester::Member(n) => is_member(n),
            Requester::Public => true,
        });
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: u8) -> Requester {
        Requester::Member(NodeId([i; 32]))
    }

    fn allowed(l: &mut RateLimiter, who: Requester, now_ms: u64, n: usize) -> usize {
        (0..n).filter(|_| l.allow(who, now_ms)).count()
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate_and_each_member_has_its_own_budget() {
        let mut l = RateLimiter::default();
        let burst = MEMBER_BUDGET.burst as usize;
        // A replayer spends one member's budget ...
        assert_eq!(allowed(&mut l, member(1), 0, 1000), burst);
        // ... not another's, nor the public one.
        assert_eq!(allowed(&mut l, member(2), 0, 1), 1);
        assert_eq!(
            allowed(&mut l, Requester::Public, 0, 1000),
            PUBLIC_BUDGET.burst as usize
        );
        // One second later: the rate's worth, no more.
        assert_eq!(
            allowed(&mut l, member(1), 1000, 1000),
            MEMBER_BUDGET.per_s as usize
        );
        // A clock that goes back refills nothing and breaks nothing.
        assert_eq!(allowed(&mut l, member(1), 500, 1000), 0);
        // A long quiet spell refills to the burst only.
        assert_eq!(allowed(&mut l, member(1), 1_000_000, 1000), burst);
    }

    #[test]
    fn the_buckets_are_bounded_and_leavers_are_forgotten() {
        let mut l = RateLimiter::default();
        for i in 0..(MAX_BUCKETS as u64 + 10) {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_be_bytes());
            assert!(l.allow(Requester::Member(NodeId(id)), i));
        }
        assert_eq!(l.len(), MAX_BUCKETS);
        l.retain_members(|_| false);
        assert!(l.is_empty());
    }
}
