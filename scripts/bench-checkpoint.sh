#!/usr/bin/env bash
# Checkpoint time at about 1 MiB and 1 GiB of replicated state (issue 5's bound: within
# 2x). Uses the dev profile (dependencies, RocksDB included, are built at -O3 there), so
# RocksDB is not compiled a second time. Needs about 2.5 GiB of free disk under $TMPDIR.
# Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo bench --locked --profile dev -p replica --bench checkpoint
