#!/usr/bin/env bash
# Installs what a fresh Debian or Ubuntu machine lacks to build and test this workspace:
# a C++ compiler and libclang (RocksDB's C++ and its bindgen bindings), libfaketime
# (the test of a node whose clock is a day ahead), iproute2 and ethtool (nodes as hosts),
# systemd-analyze (the unit's check), promtool from the prometheus package (every
# process's /metrics), and Chromium, node, npm and a pinned playwright-core (the
# dashboard's browser test). Idempotent and
# quick when everything is present. Rust itself must already be installed (rustup).
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found: install Rust first (rustup), then run this again" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then rustup component add "$component" || echo "install-deps: could not add $component" >&2; fi
  fi
done

missing=()
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }
if command -v dpkg >/dev/null 2>&1; then
  have_pkg libclang-dev || missing+=(libclang-dev)
  have_pkg clang || missing+=(clang)
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || missing+=(make)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  # libfaketime: the end-to-end test of a node whose clock is a day ahead.
  have_pkg faketime || missing+=(faketime)
  # Nodes as hosts (testnet --hosts netns): namespaces and veths (iproute2), offloads
  # off on the veths so the link emulator can copy frames (ethtool).
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v ethtool >/dev/null 2>&1 || missing+=(ethtool)
  # The deployment test checks the systemd unit with systemd-analyze.
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  # The dashboard's browser test: Debian's Chromium, driven by playwright-core under node.
  have_pkg chromium || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  # promtool (Debian's prometheus package): `promtool check metrics` on every process's
  # /metrics (tests/tests/orchestrator_upgrade.rs).
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
else
  # Not Debian: check for what bindgen needs and say what to install.
  if ! ls /usr/lib*/libclang*.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1; then
    echo "error: libclang not found: install clang and its development files (libclang)" >&2
    exit 1
  fi
fi

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "error: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# playwright-core, pinned, beside the build cache (scripts/env.sh names the directory for
# the tests). It drives Debian's Chromium and downloads no browser of its own. 1.61 is the
# newest release that runs on Node.js 18, which is what Debian 12's nodejs package brings.
PLAYWRIGHT_CORE_VERSION=1.61.0
browser_dir="${ICUP_BROWSER_DIR:-$HOME/.cache/icup/browser}"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ]; then
  echo "error: playwright-core $PLAYWRIGHT_CORE_VERSION needs Node.js 18 or newer (found $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
installed=$(node -p "require('$browser_dir/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_CORE_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm not found: install node and npm (the dashboard's browser test needs them)" >&2
    exit 1
  fi
  echo "install-deps: installing playwright-core@$PLAYWRIGHT_CORE_VERSION into $browser_dir" >&2
  mkdir -p "$browser_dir"
  npm install --prefix "$browser_dir" --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_CORE_VERSION"
fi
