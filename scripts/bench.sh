#!/usr/bin/env bash
# The headline figures beside the physical limits, measured in one run, written into
# BENCHMARKS.md between its bench markers (issue 8). Not part of the test command: the
# full run takes about half an hour (testnets of 4, 7 and 13 nodes, ten upgrades each,
# a state grown to 1 GiB, a registry of a million versions).
# Usage: scripts/bench.sh [--tiny]   (--tiny: toy sizes, a minute; not figures to quote)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
# Every binary the testnets run, optimized (the test command's build runs our own code
# at opt-level 1; a cold release build takes about 23 minutes here, RocksDB included).
cargo build --workspace --bins --release --locked
"$CARGO_TARGET_DIR/release/bench" --write BENCHMARKS.md "$@"
