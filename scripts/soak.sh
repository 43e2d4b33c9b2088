#!/usr/bin/env bash
# The simulator soak: 10,000 seeds of a 4-node subnet with one Byzantine node, network
# faults, partitions and crashes, and an upgrade from release A to release B in every
# seed; every 1000th seed uses the real BLS code. Not part of the test command.
# Usage: scripts/soak.sh [extra simulate flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
# Release: the simulator does not link RocksDB, so this build is quick.
cargo build --release --locked -p simulator --bin simulate
start=$(date +%s)
"$CARGO_TARGET_DIR/release/simulate" --nodes 4 --faulty 1 --seeds 0..10000 --heights 40 \
  --upgrade-at 12 --real-crypto-every 1000 "$@"
echo "soak took $(( $(date +%s) - start )) s"
