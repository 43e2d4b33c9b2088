#!/usr/bin/env bash
# The README's test command (and CI's): installs what is missing, then checks formatting,
# lints with warnings as errors, and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
start=$(date +%s)
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
echo "scripts/test.sh: all checks passed in $(( $(date +%s) - start )) s"
