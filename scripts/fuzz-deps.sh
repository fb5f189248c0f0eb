#!/usr/bin/env bash
# Installs the API fuzzer (schemathesis, from PyPI, into target/schemathesis-venv)
# and cargo-fuzz (from crates.io); prints nothing when both are there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
    fi
    echo "fuzz-deps: installing schemathesis"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz-deps: installing cargo-fuzz"
    cargo install -q --locked cargo-fuzz
fi
