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
# Every binary the testnets run: the test command's build (dependencies optimized, our
# own code at opt-level 1), so nothing is rebuilt between the two. Not the release
# profile: its line tables make a replica binary of 489 MB (51 MB here), a release
# package of 294 MB, and a 7-node network's ten upgrades filled this machine's disk.
cargo test --workspace --locked --no-run
"$CARGO_TARGET_DIR/debug/bench" --write BENCHMARKS.md "$@"
