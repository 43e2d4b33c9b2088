//! `simulate --nodes N --faulty F --seeds A..B --heights H [--upgrade-at K] [--json]`
//!
//! Runs seeds `A` (inclusive) to `B` (exclusive) on all cores. Prints one line per failing
//! seed with the command that replays it, then `<N> seeds, <S> safety violations, <L>
//! liveness failures`; exits non-zero when S or L is not zero.

use clap::Parser;
use simulator::{BEHAVIORS, BrokenRule, Byzantine, SimConfig, Strand, run_seed, tolerated};
use std::{process::ExitCode, time::Instant};

#[derive(Parser, Debug)]
#[command(
    name = "simulate",
    about = "Deterministic consensus simulation with faults and an upgrade",
    version
)]
struct Cli {
    /// Nodes in the subnet (4 to 40).
    #[arg(long, value_parser = clap::value_parser!(u64).range(4..=40))]
    nodes: u64,
    /// Byzantine nodes (at most f = (nodes - 1) / 3).
    #[arg(long, default_value_t = 0)]
    faulty: usize,
    /// Seeds to run, as A..B (B excluded).
    #[arg(long, value_parser = simulator::parse_seed_range)]
    seeds: (u64, u64),
    /// Every honest node must finalize this height.
    #[arg(long)]
    heights: u64,
    /// Deploy release B when the subnet reaches this height.
    #[arg(long)]
    upgrade_at: Option<u64>,
    /// Honest nodes whose preflight of release B fails (never ready for it).
    #[arg(long, default_value_t = 0)]
    unready: usize,
    /// Strand the subnet on release B once it halts for it, then recover it onto
    /// release A by a governance proposal: `recall` (B is recalled) or `crash-at-start`
    /// (B exits at every start). Needs --upgrade-at.
    #[arg(long, value_parser = parse_strand, requires = "upgrade_at")]
    strand: Option<Strand>,
    /// Use the real BLS and ed25519 code in every K-th seed (0: never; 1: always).
    #[arg(long, default_value_t = 10)]
    real_crypto_every: u64,
    /// The DKG interval length (a summary block and a CUP every L + 1 heights).
    #[arg(long, default_value_t = 9)]
    dkg_interval: u64,
    /// No network faults, partitions or crashes.
    #[arg(long)]
    no_faults: bool,
    /// Good clocks only: no drift, no steps, no node a day off.
    #[arg(long)]
    no_clock_faults: bool,
    /// Run with a deliberately broken rule (to see the checkers catch it).
    #[arg(long, value_parser = ["finalize-after-notarizing-two", "ignore-block-times"])]
    broken_rule: Option<String>,
    /// A planted bug, to see the state checkers catch it: a syncing node believes its
    /// first peer's state-sync answers unchecked.
    #[arg(long)]
    trust_state_sync: bool,
    /// Planted bug: orchestrators take peers' CUPs without checking their signatures.
    #[arg(long)]
    trust_peer_cups: bool,
    /// Every Byzantine node equivocates (the same as `--behaviors equivocate`).
    #[arg(long, conflicts_with = "behaviors")]
    only_equivocators: bool,
    /// The Byzantine behaviours to draw from, comma-separated (default: all of them):
    /// equivocate, bad-signatures, withhold, replay, wrong-version, forge-cup-shares,
    /// block-times, malformed, lying-catch-up, lying-state-sync, bad-cup-answers,
    /// lying-readiness.
    #[arg(long, value_delimiter = ',', value_parser = parse_behavior)]
    behaviors: Option<Vec<Byzantine>>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON object per seed, then the summary line.
    #[arg(long)]
    json: bool,
}

fn parse_behavior(s: &str) -> Result<Byzantine, String> {
    Byzantine::from_name(s).ok_or_else(|| {
        let all: Vec<&str> = BEHAVIORS.iter().map(|b| b.name()).collect();
        format!("unknown behaviour {s:?}; one of {}", all.join(", "))
    })
}

fn parse_strand(s: &str) -> Result<Strand, String> {
    Strand::parse(s).ok_or_else(|| format!("unknown scenario {s:?}; one of recall, crash-at-start"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let n = cli.nodes as usize;
    if cli.faulty > tolerated(n) {
        eprintln!(
            "error: --faulty {} exceeds f = {} for {n} nodes",
            cli.faulty,
            tolerated(n)
        );
        return ExitCode::from(2);
    }
    let base = SimConfig {
        nodes: n,
        faulty: cli.faulty,
        heights: cli.heights,
        upgrade_at: cli.upgrade_at,
        unready: cli.unready,
        strand: cli.strand,
        real_crypto_every: cli.real_crypto_every,
        dkg_interval_length: cli.dkg_interval,
        faults: !cli.no_faults,
        clock_faults: !cli.no_clock_faults,
        broken_rule: cli.broken_rule.as_ref().map(|r| match r.as_str() {
            "ignore-block-times" => BrokenRule::IgnoreBlockTimes,
            _ => BrokenRule::FinalizeAfterNotarizingTwo,
        }),
        behaviors: if cli.only_equivocators {
            vec![Byzantine::Equivocate]
        } else {
            cli.behaviors.clone().unwrap_or_else(|| BEHAVIORS.to_vec())
        },
        trust_state_sync: cli.trust_state_sync,
        trust_peer_cups: cli.trust_peer_cups,
    };
    let (a, b) = cli.seeds;
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |p| p.get()));
    let started = Instant::now();
    let results = simulator::run_seeds(a, b, threads, |seed| run_seed(&base, seed), |r| r.seed);
    let (mut safety, mut liveness) = (0, 0);
    let syncs: u64 = results.iter().map(|r| r.state_syncs).sum();
    let dropped: u64 = results.iter().map(|r| r.sync_peers_dropped).sum();
    for r in &results {
        if cli.json {
            println!(
                "{}",
                serde_json::json!({
                    "seed": r.seed, "digest": r.digest, "safety_violations": r.safety_violations,
                    "liveness_failures": r.liveness_failures, "messages": r.messages,
                    "virtual_time_ms": r.virtual_time_ms, "min_finalized": r.min_finalized,
                    "upgrade_height": r.upgrade_height, "state_syncs": r.state_syncs,
                    "sync_peers_dropped": r.sync_peers_dropped,
                })
            );
        }
        if !r.safety_violations.is_empty() || !r.liveness_failures.is_empty() {
            let replay = base.replay_command(r.seed);
            for v in &r.safety_violations {
                eprintln!("seed {}: SAFETY: {v}", r.seed);
            }
            for l in &r.liveness_failures {
                eprintln!("seed {}: LIVENESS: {l}", r.seed);
            }
            eprintln!("seed {}: replay with: {replay}", r.seed);
        }
        safety += usize::from(!r.safety_violations.is_empty());
        liveness += usize::from(!r.liveness_failures.is_empty());
    }
    eprintln!(
        "({:.1} s wall; {syncs} state syncs, {dropped} state-sync peers dropped)",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{} seeds, {safety} safety violations, {liveness} liveness failures",
        results.len()
    );
    if safety + liveness > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
