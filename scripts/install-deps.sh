#!/usr/bin/env bash
# Installs what a fresh Debian or Ubuntu machine lacks to build and test this workspace:
# a C++ compiler and libclang (RocksDB's C++ and its bindgen bindings), libfaketime
# (the test of a node whose clock is a day ahead), and promtool from the prometheus
# package (the test that checks every process's /metrics). Idempotent and
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
