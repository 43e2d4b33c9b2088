#!/usr/bin/env bash
# The headline figures beside the physical limits, measured in one run, written into
# BENCHMARKS.md between its bench markers (issue 8). Not part of the test command.
# Usage: scripts/bench.sh [--tiny]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --locked -p bench
"$CARGO_TARGET_DIR/debug/bench" --write BENCHMARKS.md "$@"
