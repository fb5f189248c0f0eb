#!/usr/bin/env bash
# Runs each cargo-fuzz target of panproto/fuzz (Range headers, chunk lists,
# paths) for PAN_FUZZ_SECS seconds (default 20). Stable Rust runs it with
# RUSTC_BOOTSTRAP=1, since the sanitizer flags are nightly-only.
set -euo pipefail
cd "$(dirname "$0")/../panproto/fuzz"
secs="${PAN_FUZZ_SECS:-20}"
status=0
for target in range_header chunk_list path; do
    echo "fuzz: $target for ${secs}s"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$secs" 2>fuzz-$target.log; then
        tail -40 "fuzz-$target.log"
        status=1
    else
        grep -E "^Done" "fuzz-$target.log" || true
    fi
done
exit $status
