#!/usr/bin/env bash
# The README's main-job command. The local testnet (issue 7) does not exist yet; until it
# does, this shows the pieces an upgrade is made of, for real:
#   1. a threshold-signed catch-up package, checked by `cup inspect`;
#   2. governance: a registry server, and `nns` electing a release and deploying it;
#   3. the consensus protocol upgrading a subnet from release A to B, in the simulator,
#      with a Byzantine node and network faults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --locked --workspace --bins
bin="$CARGO_TARGET_DIR/debug"
tmp=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

echo "== 1. A CUP signed by a 4-node subnet (threshold 3), checked against the subnet key"
fixtures=cup/tests/fixtures
key=$(cat "$fixtures/subnet_key.hex")
"$bin/cup" inspect "$fixtures/signed.cup" --subnet-key "$key"
echo "-- the same CUP as written by a newer release with one more field: still valid"
"$bin/cup" inspect "$fixtures/signed_newer_release.cup" --subnet-key "$key" | grep -E '^(unknown_fields|signature):'
echo "-- one byte flipped on disk:"
cp "$fixtures/signed.cup" "$tmp/flipped.cup"
printf '\x00' | dd of="$tmp/flipped.cup" bs=1 seek=200 conv=notrunc status=none
if "$bin/cup" inspect "$tmp/flipped.cup" --subnet-key "$key"; then
  echo "demo: a corrupted CUP was accepted" >&2
  exit 1
fi

echo
echo "== 2. Governance: elect release 2.0.0 and deploy it to the subnet"
"$bin/registry" generate-genesis --dir "$tmp/net" --nodes 4 --neurons 3 --version 1.0.0
"$bin/registry" init --dir "$tmp/net/registry" --genesis "$tmp/net/genesis.json"
"$bin/registry" serve --dir "$tmp/net/registry" --listen 127.0.0.1:0 > "$tmp/serve.out" 2> "$tmp/serve.log" &
server=$!
for _ in $(seq 50); do grep -q listening "$tmp/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$tmp/serve.out")
nns() { "$bin/nns" --registry "$url" --registry-key "$(cat "$tmp/net/registry/registry_public_key.hex")" "$@"; }
subnet=$(nns subnets --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["subnet_id"])')
k0="$tmp/net/neurons/neuron-0.key"; k1="$tmp/net/neurons/neuron-1.key"
sha=$(printf 'release 2.0.0' | sha256sum | cut -d' ' -f1)
echo "registry version $(nns registry-version)"
p=$(nns --neuron-key "$k0" propose elect-version --version 2.0.0 --sha256 "$sha" \
      --url http://127.0.0.1:9/2.0.0.tar.gz | awk '{print $2}')
echo "neuron 0 proposed #$p (elect 2.0.0); neuron 1 votes yes:"
nns --neuron-key "$k1" vote --proposal "$p" --yes
echo "-- a deploy of a version nobody elected is refused and changes nothing:"
nns --neuron-key "$k0" propose deploy-version --subnet "$subnet" --version 9.9.9 || true
p=$(nns --neuron-key "$k0" propose deploy-version --subnet "$subnet" --version 2.0.0 | awk '{print $2}')
nns --neuron-key "$k1" vote --proposal "$p" --yes
echo "registry version $(nns registry-version); subnet now:"
nns subnets

echo
echo "== 3. Consensus: 20 simulated subnets (4 nodes, 1 Byzantine, network faults) upgrade from A to B"
"$bin/simulate" --nodes 4 --faulty 1 --seeds 0..20 --heights 40 --upgrade-at 12 --real-crypto-every 0

echo
echo "The local multi-node testnet demo (testnet demo, real processes end to end) arrives with issue 7."
