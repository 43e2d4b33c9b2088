#!/usr/bin/env bash
# Usage: scripts/chaos.sh N [--seed S]
# N upgrades in a row on a 4-node testnet whose nodes are network namespaces (root),
# under load, each with faults drawn from the seed at random instants (README, "Chaos").
# Ends with "N upgrades complete; ... 0 lost" or names the seed, upgrade and faults that
# failed; the last line is the run's JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:?usage: scripts/chaos.sh N [--seed S]}"
shift
seed=1
if [ "${1:-}" = "--seed" ]; then
  seed="${2:?--seed needs a value}"
fi
scripts/install-deps.sh
source scripts/env.sh
cargo build --workspace --bins --locked
exec "$CARGO_TARGET_DIR/debug/testnet" chaos --upgrades "$n" --seed "$seed" --json
