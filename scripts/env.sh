# Sourced by the scripts: one target directory outside the clone, so that every clone on
# this machine (and CI's fresh clone) reuses the compiled dependencies; RocksDB's C++
# alone takes about 17 minutes on 2 cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/icup/target}"
# Where scripts/install-deps.sh puts playwright-core for the dashboard's browser test.
export ICUP_BROWSER_DIR="${ICUP_BROWSER_DIR:-$HOME/.cache/icup/browser}"
