#!/usr/bin/env bash
# The simulator soak (issue 14's bar): 10,000 seeds of a 4-node subnet with one Byzantine
# node, then 1,000 seeds each at n = 7 (two Byzantine) and n = 13 (four Byzantine). Every
# seed: a Byzantine behaviour drawn from all of them (lying catch-up, lying state sync,
# bad CUP answers through the orchestrator's real `decide`, block times, ...), clock
# faults (drift, steps, a day off on some nodes), network faults, a partition and/or a
# crash in about half, and an upgrade from release A to B; every 1000th seed uses the real
# BLS code. Not part of the test command.
# Usage: scripts/soak.sh [extra simulate flags]   (SOAK_SIZES="4:10000 7:1000" to pick)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
# Release: the simulator does not link RocksDB, so this build is quick.
cargo build --release --locked -p simulator --bin simulate
status=0
for size in ${SOAK_SIZES:-4:10000 7:1000 13:1000}; do
  n=${size%%:*}
  seeds=${size##*:}
  f=$(( (n - 1) / 3 ))
  start=$(date +%s)
  echo "== n = $n, f = $f, seeds 0..$seeds"
  "$CARGO_TARGET_DIR/release/simulate" --nodes "$n" --faulty "$f" --seeds "0..$seeds" \
    --heights 40 --upgrade-at 12 --real-crypto-every 1000 "$@" || status=1
  echo "n = $n took $(( $(date +%s) - start )) s"
done
exit $status
