#!/usr/bin/env bash
# The membership soak (issue 18's bar): 1,000 seeds, one resharing each, committees of 4
# to 13 nodes; nodes join, leave or are replaced; up to f Byzantine old members deal bad
# values (answered or not), withhold their dealings or complain about honest dealers;
# latency, reordering, loss and duplication on every link; a crash and restart of an
# honest member in half the seeds, a partition in half. Real BLS, ed25519 and
# resharing code throughout. Not part of the test command (about half an hour here).
# Usage: scripts/soak-membership.sh [extra simulate-membership flags]  (SEEDS=0..1000)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --release --locked -p simulator --bin simulate-membership
start=$(date +%s)
"$CARGO_TARGET_DIR/release/simulate-membership" --max-nodes 13 --seeds "${SEEDS:-0..1000}" "$@"
echo "took $(( $(date +%s) - start )) s"
