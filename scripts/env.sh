# Sourced by the scripts: one target directory outside the clone, so that every clone on
# this machine (and CI's fresh clone) reuses the compiled dependencies; RocksDB's C++
# alone takes about 17 minutes on 2 cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/icup/target}"
# Where scripts/install-deps.sh puts playwright-core for the dashboard's browser test.
export ICUP_BROWSER_DIR="${ICUP_BROWSER_DIR:-$HOME/.cache/icup/browser}"
# No incremental caches: every clone is a new path, so they were never reused, and they
# grew to 24 GiB in the shared target directory until the disk filled up and a test's
# nodes could not unpack a release (2026-12-01).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
