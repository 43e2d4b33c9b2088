//! `bench`: the headline figures beside the limits they stand against, measured in one
//! run on one machine, so that ratios (which drift less than absolute times on a shared
//! machine) back the claims.
//!
//! In process: the limits (ed25519 and BLS verifications per second on one core, a QUIC
//! round trip on loopback, spawning a process, opening a state) and the figures that
//! need no network of nodes (CUP verification, registry reads at a million versions,
//! replicating a registry). Then local testnets of 4, 7 and 13 nodes, driven through
//! the `testnet` and `nns` commands (`net`): finality latency, throughput (with each
//! process kind's CPU time per update and memory), ten upgrades each (with the
//! downtime's stages), and the state handover as the state grows to 1 GiB. `--tiny` runs every
//! measurement at a toy size: the test suite runs that, to show the command works, never
//! to judge a figure.

mod measure;
mod net;

use clap::Parser;
use serde_json::json;
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Measures the headline figures and the physical limits beside them, in one run.",
    version
)]
struct Args {
    /// Toy sizes: checks that every measurement runs (seconds, not minutes).
    #[arg(long)]
    tiny: bool,
    /// Print the figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Replace the part of FILE between `<!-- bench:start -->` and `<!-- bench:end -->`
    /// (BENCHMARKS.md) with the table.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Measure networks of these sizes instead (comma-separated, each 1 to 40), for
    /// instance `--tiny --nodes 13` to try one size at toy scale.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=40))]
    nodes: Vec<u16>,
    /// Only finality and throughput at each size: no upgrades, handovers or cross-host
    /// series (a few minutes, to compare builds; not the full table).
    #[arg(long)]
    throughput_only: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut sizes = if args.tiny {
        measure::Sizes::TINY
    } else {
        measure::Sizes::FULL
    };
    if !args.nodes.is_empty() {
        // Sizes are constants of 'static slices; one small leak per run keeps them so.
        let nodes: Vec<usize> = args.nodes.iter().map(|&n| usize::from(n)).collect();
        sizes.net.nodes = nodes.leak();
    }
    if args.throughput_only {
        sizes.net.upgrades = 0;
        sizes.net.handover_bytes = &[];
        sizes.net.cross_host_nodes = &[];
    }
    let started = std::time::Instant::now();
    let (rows, networks) = match measure::all(&sizes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let table = measure::table(&rows, args.tiny, started.elapsed());
    if args.json {
        println!(
            "{}",
            json!({ "tiny": args.tiny, "figures": rows, "networks": networks })
        );
    } else {
        println!("{table}");
    }
    if let Some(path) = args.write
        && let Err(e) = measure::write_between_markers(&path, &table)
    {
        eprintln!("bench: error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
