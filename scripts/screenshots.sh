#!/usr/bin/env bash
# Saves PNG screenshots of the web page (sign-in page, file list) to a folder,
# default scripts/screenshots/, using a throwaway panserver and headless Chromium.
#   scripts/screenshots.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-scripts/screenshots}")"
mkdir -p "$out"
bash scripts/browser-deps.sh
cargo build -q -p panserver
work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
PAN_DATA="$work" PAN_LISTEN="127.0.0.1:$port" target/debug/panserver serve >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
done
node tests/browser/screenshots.mjs "http://127.0.0.1:$port" "$out"
