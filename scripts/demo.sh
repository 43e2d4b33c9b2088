#!/usr/bin/env bash
# The README's main-job command. The local testnet (issue 7) does not exist yet; until it
# does, this shows the piece every upgrade hinges on: a threshold-signed catch-up package,
# checked by `cup inspect`, and how a corrupted one is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --locked -p cup --bin cup
cup="$CARGO_TARGET_DIR/debug/cup"
fixtures=cup/tests/fixtures
key=$(cat "$fixtures/subnet_key.hex")

echo "== A CUP signed by a 4-node subnet (threshold 3), checked against the subnet key"
"$cup" inspect "$fixtures/signed.cup" --subnet-key "$key"
echo
echo "== The same CUP as written by a newer release with one more field: still valid"
"$cup" inspect "$fixtures/signed_newer_release.cup" --subnet-key "$key" | grep -E '^(unknown_fields|signature):'
echo
echo "== One byte flipped on disk"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$fixtures/signed.cup" "$tmp/flipped.cup"
printf '\x00' | dd of="$tmp/flipped.cup" bs=1 seek=200 conv=notrunc status=none
if "$cup" inspect "$tmp/flipped.cup" --subnet-key "$key"; then
  echo "demo: a corrupted CUP was accepted" >&2
  exit 1
fi
echo
echo "The local multi-node testnet demo (testnet demo) arrives with issue 7."
