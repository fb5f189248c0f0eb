#!/usr/bin/env bash
# Runs every test: unit tests, HTTP tests against a real panserver, and mount
# tests with real panfs mounts. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v git >/dev/null 2>&1 || need+=(git)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo is required (https://rustup.rs)" >&2
    exit 1
fi

# The end-to-end tests start the binaries built here.
cargo build --workspace --bins --tests
cargo test --workspace --no-fail-fast -- --test-threads="${PAN_TEST_THREADS:-4}"
