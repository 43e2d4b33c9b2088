#!/usr/bin/env bash
# Runs the crypto and CUP criterion benchmarks (release profile) and writes their table
# into BENCHMARKS.md between the crypto-bench markers. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
for spec in "crypto crypto" "cup cup"; do
  set -- $spec
  cargo bench --locked -p "$1" --bench "$2" -- --warm-up-time 1 --measurement-time 3
done | tee /tmp/bench-crypto.log
python3 scripts/bench_table.py "$CARGO_TARGET_DIR/criterion" BENCHMARKS.md
