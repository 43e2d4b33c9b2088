#!/usr/bin/env bash
# The README's main-job command: `testnet demo`. In a temporary directory it prepares a
# 4-node network, boots it through one orchestrator per node, puts it under load, builds
# the next release's package, elects and deploys it with `nns`, watches every node halt
# at the same CUP and re-execute into the new release, checks every acknowledged write
# on every node, and prints the timeline and the downtime. Extra flags go to
# `testnet demo` (e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --locked --workspace --bins
exec "$CARGO_TARGET_DIR/debug/testnet" demo "$@"
