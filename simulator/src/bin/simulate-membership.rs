//! `simulate-membership --max-nodes N --seeds A..B [--no-byzantine] [--no-faults]
//! [--broken-rule ignore-complaints] [--threads T] [--json]`
//!
//! Runs one resharing per seed (`simulator::membership`): a committee of 4 to N, nodes
//! joining, leaving or replaced, up to f Byzantine dealers, on a seeded network. Prints
//! each failing seed with its violations and the command that replays it, then
//! `<N> seeds, <V> with violations`; exits 1 if any.

use clap::Parser;
use simulator::membership::{MembershipConfig, run_membership_seed};
use std::{process::ExitCode, time::Instant};

#[derive(Parser, Debug)]
#[command(
    name = "simulate-membership",
    about = "Membership changes with the subnet resharing its keys, one per seed",
    version
)]
struct Cli {
    /// The largest committee drawn (4 to 13 nodes).
    #[arg(long, default_value_t = 13, value_parser = clap::value_parser!(u64).range(4..=13))]
    max_nodes: u64,
    /// Seeds to run, as A..B (B excluded).
    #[arg(long, value_parser = simulator::parse_seed_range)]
    seeds: (u64, u64),
    /// No Byzantine members.
    #[arg(long)]
    no_byzantine: bool,
    /// No crash or partition (the network still loses, reorders and duplicates).
    #[arg(long)]
    no_faults: bool,
    /// A deliberately broken rule (to see the checkers catch it).
    #[arg(long, value_parser = ["ignore-complaints"])]
    broken_rule: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON object per seed, then the summary line.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = MembershipConfig {
        max_nodes: cli.max_nodes as usize,
        byzantine: !cli.no_byzantine,
        faults: !cli.no_faults,
        broken_rule: cli
            .broken_rule
            .as_ref()
            .map(|_| consensus::BrokenRule::IgnoreComplaints),
    };
    let (a, b) = cli.seeds;
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |p| p.get()));
    let started = Instant::now();
    let results = simulator::run_seeds(
        a,
        b,
        threads,
        |seed| run_membership_seed(seed, &cfg),
        |r| r.seed,
    );
    let mut failed = 0;
    for r in &results {
        if cli.json {
            println!(
                "{}",
                serde_json::json!({
                    "seed": r.seed, "old": r.old, "new": r.new, "byzantine": r.byzantine,
                    "faults": r.faults, "limitations": r.limitations,
                    "violations": r.violations, "digest": r.digest,
                })
            );
        }
        if !r.violations.is_empty() {
            failed += 1;
            for v in &r.violations {
                eprintln!(
                    "seed {} ({} -> {}, byzantine {:?}, faults {:?}): {v}",
                    r.seed, r.old, r.new, r.byzantine, r.faults
                );
            }
            eprintln!(
                "seed {}: replay with: simulate-membership --max-nodes {} --seeds {}..{}{}{}{}",
                r.seed,
                cli.max_nodes,
                r.seed,
                r.seed + 1,
                if cli.no_byzantine {
                    " --no-byzantine"
                } else {
                    ""
                },
                if cli.no_faults { " --no-faults" } else { "" },
                if cli.broken_rule.is_some() {
                    " --broken-rule ignore-complaints"
                } else {
                    ""
                },
            );
        }
    }
    let limited = results.iter().filter(|r| !r.limitations.is_empty()).count();
    for r in results.iter().filter(|r| !r.limitations.is_empty()) {
        for l in &r.limitations {
            eprintln!(
                "seed {} (faults {:?}): documented limitation: {l}",
                r.seed, r.faults
            );
        }
    }
    eprintln!("({:.1} s wall)", started.elapsed().as_secs_f64());
    println!(
        "{} seeds, {failed} with violations, {limited} with a documented limitation",
        results.len()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
