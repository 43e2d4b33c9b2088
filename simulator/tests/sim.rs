//! The simulator in the test suite: the CI seed set, determinism, and a planted bug.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use simulator::{BrokenRule, Byzantine, SimConfig, SimResult, Strand, run_seed};
use std::sync::Mutex;

/// Runs seeds `a..b` on two threads; every `real_every`-th seed uses the real BLS code.
fn run(cfg: &SimConfig, a: u64, b: u64, real_every: u64) -> Vec<SimResult> {
    let cfg = &SimConfig {
        real_crypto_every: real_every,
        ..cfg.clone()
    };
    let next = Mutex::new(a);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let seed = {
                        let mut g = next.lock().unwrap();
                        if *g >= b {
                            break;
                        }
                        *g += 1;
                        *g - 1
                    };
                    let r = run_seed(cfg, seed);
                    out.lock().unwrap().push(r);
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|r| r.seed);
    v
}

/// Asserts no seed found a safety violation or a liveness failure (each failure with
/// the command that replays it).
fn assert_no_failures(results: &[SimResult], cfg: &SimConfig, real_every: u64) {
    let cfg = &SimConfig {
        real_crypto_every: real_every,
        ..cfg.clone()
    };
    let bad: Vec<String> = results
        .iter()
        .filter(|r| !r.safety_violations.is_empty() || !r.liveness_failures.is_empty())
        .map(|r| {
            format!(
                "seed {}: {:?} {:?}\n  replay: {}",
                r.seed,
                r.safety_violations,
                r.liveness_failures,
                cfg.replay_command(r.seed)
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} seeds failed:\n{}",
        bad.len(),
        results.len(),
        bad.join("\n")
    );
}

/// No failures, every honest node at the target height, and the upgrade happened.
fn assert_clean(results: &[SimResult], cfg: &SimConfig, real_every: u64) {
    assert_no_failures(results, cfg, real_every);
    for r in results {
        assert!(r.min_finalized >= cfg.heights, "seed {}: {r:?}", r.seed);
        assert!(
            r.upgrade_height.is_some(),
            "seed {}: no upgrade happened",
            r.seed
        );
    }
}

#[test]
fn ci_seeds_4_nodes_a_release_too_few_are_ready_for_never_halts_the_subnet() {
    // f = 1 Byzantine and 2 honest nodes whose preflight fails: at most 2 of the 3
    // ready words a halt needs.
    let mut cfg = ci_config(4);
    cfg.unready = 2;
    let results = run(&cfg, 0, 30, 0);
    assert_no_failures(&results, &cfg, 0);
    for r in &results {
        assert_eq!(r.upgrade_expected, Some(false));
        assert_eq!(r.upgrade_height, None, "seed {}", r.seed);
        assert!(r.min_finalized >= cfg.heights, "seed {}: {r:?}", r.seed);
    }
}

#[test]
fn ci_seeds_4_nodes_a_recalled_or_crashing_release_strands_the_subnet_and_a_recovery_brings_it_back()
 {
    // Governance recalls B as soon as the subnet halts for it (or B exits at every
    // start), then adopts a recovery onto A at the stalled CUP: no honest node starts B
    // once its copy holds the recall, and every honest node resumes past the recovery.
    // Seed 0 runs with the real BLS and ed25519 code.
    for strand in [Strand::Recall, Strand::CrashAtStart] {
        let mut cfg = ci_config(4);
        cfg.strand = Some(strand);
        let results = run(&cfg, 0, 12, 12);
        assert_clean(&results, &cfg, 12);
    }
}

#[test]
fn f_nodes_lying_about_readiness_can_strand_the_subnet_and_a_recovery_brings_it_back() {
    // n = 4: one liar says it is ready for B and runs nothing at the switch, and one
    // honest node's preflight fails. Two honest words and the lie make the n - f the gate
    // needs, so the subnet halts for B, which the two honest nodes able to run it cannot
    // carry on alone: stranded (THREATS.md). Governance recalls B and recovers onto A.
    let mut cfg = ci_config(4);
    cfg.behaviors = vec![Byzantine::LyingReadiness];
    cfg.unready = 1;
    cfg.strand = Some(Strand::Recall);
    // With a strand configured, a seed whose subnet never halted for B, or was never
    // recovered, is a liveness failure (run.rs); B need not be the final release, so
    // `assert_clean`'s upgrade height does not apply.
    let results = run(&cfg, 0, 12, 12);
    assert_no_failures(&results, &cfg, 12);
    for r in &results {
        assert!(r.min_finalized >= cfg.heights, "seed {}: {r:?}", r.seed);
    }
}

fn ci_config(nodes: usize) -> SimConfig {
    let mut cfg = SimConfig::new(nodes, simulator::tolerated(nodes), 40);
    cfg.upgrade_at = Some(12);
    cfg
}

// 100 + 40 + 16 seeds (the soak, scripts/soak.sh, runs 12,000), each with f Byzantine nodes, network faults, a partition
// or a crash in some, and an upgrade from release A to release B.

#[test]
fn ci_seeds_4_nodes_1_byzantine_with_upgrade() {
    let cfg = ci_config(4);
    // Seeds 0, 50 and 100 run with the real BLS and ed25519 code.
    assert_clean(&run(&cfg, 0, 100, 50), &cfg, 50);
}

#[test]
fn ci_seeds_7_nodes_2_byzantine_with_upgrade() {
    let cfg = ci_config(7);
    assert_clean(&run(&cfg, 0, 40, 0), &cfg, 0);
}

#[test]
fn ci_seeds_13_nodes_4_byzantine_with_upgrade() {
    let cfg = ci_config(13);
    assert_clean(&run(&cfg, 0, 16, 0), &cfg, 0);
}

/// Shares and aggregates a node already holds (duplicates, resends, every node's
/// aggregate) are dropped before their signatures are checked; the CI seeds above show
/// that this keeps safety and liveness.
#[test]
fn redundant_artifacts_are_dropped_unverified() {
    let cfg = ci_config(4);
    let r = run_seed(&cfg, 3);
    assert!(
        r.safety_violations.is_empty() && r.liveness_failures.is_empty(),
        "{r:?}"
    );
    assert!(r.redundant_artifacts > 0, "{r:?}");
}

#[test]
fn the_same_seed_gives_the_same_digest() {
    let cfg = ci_config(4);
    let a = run_seed(&cfg, 7);
    let b = run_seed(&cfg, 7);
    assert_eq!(a, b);
    let c = run_seed(&cfg, 8);
    assert_ne!(a.digest, c.digest, "different seeds, same history?");
}

/// A finalization share after notarizing another block at the same height breaks safety,
/// and the checkers say so within the CI seeds (with equivocating block makers).
#[test]
fn the_checkers_catch_a_broken_finalization_rule() {
    let mut cfg = ci_config(4);
    cfg.heights = 30;
    cfg.behaviors = vec![Byzantine::Equivocate];
    cfg.broken_rule = Some(BrokenRule::FinalizeAfterNotarizingTwo);
    cfg.clock_faults = false;
    let results = run(&cfg, 0, 40, 0);
    let violations: Vec<&SimResult> = results
        .iter()
        .filter(|r| !r.safety_violations.is_empty())
        .collect();
    assert!(
        !violations.is_empty(),
        "the planted bug went unnoticed in 40 seeds"
    );
    assert!(
        violations.iter().any(|r| r
            .safety_violations
            .iter()
            .any(|v| v.contains("finalized different blocks")
                || v.contains("off its own finalized chain"))),
        "{violations:?}"
    );
    // The same seeds with the correct rule are clean.
    cfg.broken_rule = None;
    let seed = violations[0].seed;
    let r = run_seed(&cfg, seed);
    assert!(r.safety_violations.is_empty(), "{r:?}");
}

/// With block times unchecked (the planted bug), Byzantine block makers and wrong clocks
/// move the chain's time ahead, and the chain-time checker says so; with the rule in
/// place the same seeds are clean.
#[test]
fn the_checkers_catch_unchecked_block_times() {
    let mut cfg = ci_config(4);
    cfg.heights = 25;
    cfg.behaviors = vec![Byzantine::BlockTimes];
    cfg.broken_rule = Some(BrokenRule::IgnoreBlockTimes);
    let results = run(&cfg, 0, 20, 0);
    let caught: Vec<&SimResult> = results
        .iter()
        .filter(|r| {
            r.safety_violations
                .iter()
                .any(|v| v.contains("ahead of the true time") || v.contains("panicked"))
        })
        .collect();
    assert!(
        caught.len() >= 5,
        "the planted bug went unnoticed: {} of 20 seeds caught it",
        caught.len()
    );
    cfg.broken_rule = None;
    let seeds: Vec<u64> = caught.iter().map(|r| r.seed).collect();
    for seed in seeds {
        let r = run_seed(&cfg, seed);
        assert!(
            r.safety_violations.is_empty() && r.liveness_failures.is_empty(),
            "{r:?}"
        );
    }
}

/// Every new attack runs on its own (at n = 7 with two attackers, and clock faults) and
/// leaves safety and liveness intact; the replay line names every setting.
#[test]
fn each_new_attack_alone_leaves_the_subnet_safe_and_live() {
    for b in [
        Byzantine::BlockTimes,
        Byzantine::Malformed,
        Byzantine::LyingCatchUp,
        Byzantine::LyingStateSync,
    ] {
        let mut cfg = ci_config(7);
        cfg.heights = 30;
        cfg.behaviors = vec![b];
        assert_clean(&run(&cfg, 0, 8, 8), &cfg, 8);
        assert!(
            cfg.replay_command(3)
                .contains(&format!("--behaviors {}", b.name())),
            "{}",
            cfg.replay_command(3)
        );
    }
}

/// Lying state-sync peers are dropped at their first bad answer and every syncing node
/// ends with the state its CUP names; a node that believes its first peer unchecked (the
/// planted bug) ends with another state, and the state checkers say so.
#[test]
fn lying_state_sync_peers_are_dropped_and_believing_them_is_caught() {
    let mut cfg = ci_config(4);
    cfg.behaviors = vec![Byzantine::LyingStateSync];
    let results = run(&cfg, 0, 30, 0);
    assert_clean(&results, &cfg, 0);
    let syncs: u64 = results.iter().map(|r| r.state_syncs).sum();
    let dropped: u64 = results.iter().map(|r| r.sync_peers_dropped).sum();
    assert!(
        syncs >= 10 && dropped >= 3,
        "{syncs} syncs, {dropped} dropped"
    );

    cfg.trust_state_sync = true;
    assert!(cfg.replay_command(1).contains("--trust-state-sync"));
    let caught: Vec<SimResult> = run(&cfg, 0, 30, 0)
        .into_iter()
        .filter(|r| {
            r.safety_violations
                .iter()
                .any(|v| v.contains("another state") || v.contains("not the one its CUP names"))
        })
        .collect();
    assert!(
        caught.len() >= 3,
        "the planted bug went unnoticed: {} of 30 seeds caught it",
        caught.len()
    );
}

/// Byzantine CUP endpoints (forged, foreign, other-subnet, stale, replayed, far-future,
/// made-up registry CUPs) leave every honest orchestrator on CUPs an honest quorum made,
/// through the real `decide`, with real BLS in some seeds.
#[test]
fn lying_cup_endpoints_leave_the_subnet_safe_and_live() {
    for nodes in [4, 7] {
        let mut cfg = ci_config(nodes);
        cfg.heights = 30;
        cfg.behaviors = vec![Byzantine::BadCupAnswers];
        assert_clean(&run(&cfg, 0, 12, 12), &cfg, 12);
    }
}

/// With the orchestrators' CUP signature check off (the planted bug), the lying
/// endpoints get honest nodes to start from forged CUPs, and the start-CUP checker says
/// so; with the check on, the same seeds are clean.
#[test]
fn the_checkers_catch_orchestrators_that_trust_peer_cups() {
    let mut cfg = ci_config(4);
    cfg.heights = 30;
    cfg.behaviors = vec![Byzantine::BadCupAnswers];
    cfg.trust_peer_cups = true;
    assert!(cfg.replay_command(1).contains("--trust-peer-cups"));
    let results = run(&cfg, 0, 8, 4);
    let caught: Vec<u64> = results
        .iter()
        .filter(|r| {
            r.safety_violations
                .iter()
                .any(|v| v.contains("that no honest quorum produced"))
        })
        .map(|r| r.seed)
        .collect();
    assert!(
        caught.len() >= 4,
        "the planted bug went unnoticed: {} of 8 seeds caught it",
        caught.len()
    );
    cfg.trust_peer_cups = false;
    for seed in caught {
        let r = run_seed(&cfg, seed);
        assert!(
            r.safety_violations.is_empty() && r.liveness_failures.is_empty(),
            "{r:?}"
        );
    }
}
