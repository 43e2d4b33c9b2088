#!/usr/bin/env bash
# Writes the golden fixtures of both releases again (replica::compat): the first
# release's binary into replica/tests/fixtures/release-1, the next release's into
# release-2. Run it only after a deliberate format change, and commit the new sets with
# the reason; the compatibility tests (cargo test -p replica -p replica-next --test
# compat) then check that each release still reads the previous release's set.
#
#   scripts/write-fixtures.sh          both sets
#   scripts/write-fixtures.sh 2        only release-2 (a shipped release's set stays)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build -p replica -p replica-next
target="${CARGO_TARGET_DIR:-target}/debug"
fixtures=replica/tests/fixtures
releases="${*:-1 2}"
for r in $releases; do
  case "$r" in
    1) bin=replica ;;
    2) bin=replica-next ;;
    *) echo "write-fixtures: no release $r (1 or 2)" >&2; exit 2 ;;
  esac
  rm -rf "$fixtures/release-$r"
  "$target/$bin" --write-fixtures "$fixtures/release-$r"
  (cd "$fixtures/release-$r" && sha256sum --quiet -c MANIFEST)
done
git status --short -- "$fixtures"
