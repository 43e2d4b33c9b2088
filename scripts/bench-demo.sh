#!/usr/bin/env bash
# `testnet demo`'s downtime over N runs (default 10): median and maximum, plus writes
# acknowledged and lost per run. Not part of the test command.
# Usage: scripts/bench-demo.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --locked --workspace --bins
runs=${1:-10}
out=$(mktemp)
for i in $(seq "$runs"); do
  "$CARGO_TARGET_DIR/debug/testnet" demo --json | tail -1 >> "$out"
  echo "run $i: $(tail -1 "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["downtime_ms"], "ms downtime,", d.get("deploy_to_all_running_ms"), "ms deploy to all running,", d["writes_acknowledged"], "acknowledged,", d["writes_lost"], "lost")')"
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
d = sorted(r["downtime_ms"] for r in rows)
a = sorted(r["deploy_to_all_running_ms"] for r in rows if r.get("deploy_to_all_running_ms") is not None)
print(f"{len(rows)} runs: downtime median {statistics.median(d):.0f} ms, max {d[-1]} ms; "
      f"writes lost in total: {sum(r['writes_lost'] for r in rows)}")
if a:
    print(f"deploy adopted to every node running the new release: median {statistics.median(a):.0f} ms, max {a[-1]} ms")
PY
