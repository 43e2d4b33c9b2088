//! The membership simulator in the test suite (toy size): a few seeds of resharing with
//! Byzantine dealers are clean and deterministic, and a planted rule that ignores
//! complaints is caught (the full soak: `simulate-membership --seeds 0..1000`).
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use simulator::{
    BrokenRule,
    membership::{MembershipConfig, run_membership_seed},
};

fn cfg(broken_rule: Option<BrokenRule>) -> MembershipConfig {
    MembershipConfig {
        max_nodes: 7,
        byzantine: true,
        broken_rule,
        faults: true,
    }
}

#[test]
fn ci_seeds_of_resharing_with_byzantine_dealers_are_clean_and_deterministic() {
    // Seeds 0..4: joins, a shrink, Byzantine dealers answering bad values, complaining
    // about honest dealers.
    // Seeds 0 and 1 also crash an honest member mid-resharing and partition the old
    // committee; seed 2 crashes one.
    let mut faults = Vec::new();
    for seed in 0..4 {
        let r = run_membership_seed(seed, &cfg(None));
        assert!(r.violations.is_empty(), "seed {seed}: {r:?}");
        faults.extend(r.faults);
    }
    assert!(faults.iter().any(|f| f.starts_with("crash")), "{faults:?}");
    assert!(
        faults.iter().any(|f| f.starts_with("partition")),
        "{faults:?}"
    );
    let a = run_membership_seed(2, &cfg(None));
    let b = run_membership_seed(2, &cfg(None));
    assert_eq!(a.digest, b.digest);
}

#[test]
fn a_planted_rule_ignoring_complaints_leaves_honest_members_without_shares() {
    // Seed 12: 4 -> 3 members, node 0 deals bad values and never answers.
    let clean = run_membership_seed(12, &cfg(None));
    assert!(clean.violations.is_empty(), "{clean:?}");
    let broken = run_membership_seed(12, &cfg(Some(BrokenRule::IgnoreComplaints)));
    assert!(
        broken
            .violations
            .iter()
            .any(|v| v.contains("has no shares")),
        "{broken:?}"
    );
}
