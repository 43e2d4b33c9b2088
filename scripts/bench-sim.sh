#!/usr/bin/env bash
# Simulator throughput: simulated heights per wall-clock second and messages per height,
# for n = 4, 13, 40, with the signature stand-in and with the real BLS/ed25519 code.
# One worker thread, no network faults, no Byzantine nodes. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
# Release: the simulator does not link RocksDB, so this build is quick.
cargo build --release --locked -p simulator --bin simulate
sim="$CARGO_TARGET_DIR/release/simulate"
printf '| n | crypto | seeds | heights each | wall s | heights/s | messages/height |\n|---|---|---|---|---|---|---|\n'
run() { # n crypto(0|1) seeds heights
  local n=$1 real=$2 seeds=$3 heights=$4 every=0 start end out
  [ "$real" = 1 ] && every=1
  start=$(date +%s.%N)
  out=$("$sim" --nodes "$n" --faulty 0 --seeds 0.."$seeds" --heights "$heights" --no-faults \
        --real-crypto-every "$every" --threads 1 --json 2>/dev/null)
  end=$(date +%s.%N)
  python3 - "$n" "$real" "$seeds" "$heights" "$start" "$end" <<PY
import json, sys
n, real, seeds, heights, start, end = sys.argv[1:]
rows = [json.loads(l) for l in """$out""".splitlines() if l.startswith("{")]
wall = float(end) - float(start)
done = sum(r["min_finalized"] for r in rows)
msgs = sum(r["messages"] for r in rows)
print(f"| {n} | {'real' if real == '1' else 'stand-in'} | {seeds} | {heights} | {wall:.1f} | {done / wall:.1f} | {msgs / max(done, 1):.0f} |")
PY
}
run 4 0 20 100
run 13 0 5 60
run 40 0 1 30
run 4 1 1 30
run 13 1 1 10
run 40 1 1 3
