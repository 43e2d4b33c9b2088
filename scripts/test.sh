#!/usr/bin/env bash
# The README's test command (and CI's): installs what is missing, then checks formatting,
# lints with warnings as errors, and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
# The official BLS vectors live in ../shared beside the repository. A clone made
# elsewhere from a local repository (git clone /path/repo /tmp/x/p) finds them beside
# the repository it was cloned from.
if [ -z "${BLS_TEST_VECTORS:-}" ] && [ ! -d ../shared/testvectors/bls ]; then
  origin=$(git config --get remote.origin.url 2>/dev/null || true)
  if [ -n "$origin" ] && [ -d "$origin/../shared/testvectors/bls" ]; then
    export BLS_TEST_VECTORS="$(cd "$origin/../shared/testvectors/bls" && pwd)"
  fi
fi
start=$(date +%s)
# The end-to-end tests unpack releases for dozens of nodes: refuse to start on a nearly
# full disk, where they would fail halfway with "No space left on device".
mkdir -p "$CARGO_TARGET_DIR"
free_gib() { echo $(( $(df -Pk "$CARGO_TARGET_DIR" | awk 'NR==2 {print $4}') / 1048576 )); }
if [ "$(free_gib)" -lt 8 ]; then
  # Incremental caches of earlier builds are safe to drop (this build makes none).
  rm -rf "$CARGO_TARGET_DIR"/*/incremental
fi
if [ "$(free_gib)" -lt 8 ]; then
  echo "scripts/test.sh: only $(free_gib) GiB free beside $CARGO_TARGET_DIR; the tests need about 8" >&2
  exit 1
fi
# Where the time goes (a warm run should stay under ten minutes): one line per phase.
phase() { echo "scripts/test.sh: $1 done at $(( $(date +%s) - start )) s"; }
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
phase clippy
# Every temporary directory a test makes lives under one directory of this run, so a
# process a test left behind is recognisable by its command line (it names its dir).
tests_tmp="$(mktemp -d /tmp/icup-tests.XXXXXX)"
TMPDIR="$tests_tmp" cargo test --workspace --locked --no-run
phase "building the tests"
# One test binary after another. Running them in parallel streams took a fresh clone
# from 988 s to 620 s, but two of four such runs failed on contention (BENCHMARKS.md,
# "Test command duration"); --no-fail-fast runs every binary even after a failure.
TMPDIR="$tests_tmp" cargo test --workspace --locked --no-fail-fast
phase tests
# Nothing outlives its owner (issue 16): no process of a finished test may remain.
scripts/leftovers.sh "$tests_tmp"
rm -rf "$tests_tmp"
echo "scripts/test.sh: all checks passed in $(( $(date +%s) - start )) s"
