#!/usr/bin/env bash
# Runs every test, on both profiles:
#   1. the embedded default: unit tests, HTTP tests against a real panserver, and
#      mount tests with real panfs mounts (cargo test --workspace);
#   2. the full stack: scripts/services.sh starts MariaDB, Redis, RabbitMQ and
#      Ceph (RGW) on 127.0.0.1; the same HTTP and mount suites run against it,
#      then the tests of the full stack only; the services stop even when tests fail.
# Installs what it needs first (apt-get). Set PAN_TEST_PROFILES=embedded (or full)
# to run one profile only.
set -euo pipefail
cd "$(dirname "$0")/.."
profiles="${PAN_TEST_PROFILES:-embedded full}"

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

# The web page's tests drive Debian's Chromium with playwright-core; the API is
# fuzzed with schemathesis and the parsers with cargo-fuzz.
bash scripts/browser-deps.sh
bash scripts/fuzz-deps.sh
# The POSIX conformance suite (tests/tests/pjdfstest.rs runs it on a mount).
if ! pjdfstest --version 2>/dev/null | grep -q '0.2.2'; then
    echo "test.sh: installing pjdfstest"
    cargo install -q --locked pjdfstest --version 0.2.2
fi

# The end-to-end tests start the binaries built here.
cargo build --workspace --bins --tests
threads="${PAN_TEST_THREADS:-4}"
# The POSIX suite runs on its own, with --nocapture, so its counts are in the log.
pjdfstest=pjdfstest_passes_but_for_known_differences
status=0

if [[ " $profiles " == *" embedded "* ]]; then
    echo "== embedded profile"
    cargo test --workspace --no-fail-fast -- --test-threads="$threads" --skip "$pjdfstest" || status=1
    cargo test -p pantests --test pjdfstest -- --nocapture || status=1
    bash scripts/fuzz.sh || status=1
fi

if [[ " $profiles " == *" full "* ]]; then
    echo "== full stack"
    SERVICES_DIR="${PAN_SERVICES_DIR:-$(mktemp -d /var/tmp/pan-test-services.XXXXXX)}"
    services_down() {
        local rc=$?
        bash scripts/services.sh down "$SERVICES_DIR" || true
        # A directory of our own making goes too once the tests passed (logs stay for a failure).
        if [ -z "${PAN_SERVICES_DIR:-}" ] && [ "$rc" = 0 ]; then rm -rf "$SERVICES_DIR" "$SERVICES_DIR.env"; fi
    }
    trap services_down EXIT
    echo "disk: $(df -h --output=avail "$SERVICES_DIR" | tail -n 1 | tr -d ' ') free for the services' data"
    started=$(date +%s)
    bash scripts/services.sh up "$SERVICES_DIR" >"$SERVICES_DIR.env"
    echo "services up in $(($(date +%s) - started)) s"
    # shellcheck disable=SC1090
    source "$SERVICES_DIR.env"
    export PAN_TEST_PROFILE=full PAN_TEST_SERVICES_DIR="$SERVICES_DIR" PAN_TEST_CEPH_CONF="$SERVICES_DIR/ceph/ceph.conf"
    # Tiny files cost several MariaDB commits and a confirmed publish each: fewer here.
    export PAN_SMALL_FILES="${PAN_SMALL_FILES:-500}"
    # The embedded run stops its server for 60 s under a working mount; 15 s here.
    export PAN_OFFLINE_SECS="${PAN_OFFLINE_SECS:-15}"
    cargo test -p pantests --no-fail-fast \
        --test http --test http_posix --test pango --test hostile --test api_fuzz --test full_disk \
        --test mount_tools --test mount_lifecycle --test mount_differential \
        --test mount_posix --test remote_contract --test feed --test mount_feed --test batch --test mount_far --test mount_local \
        -- --test-threads="$threads" || status=1
    cargo test -p pantests --test pjdfstest -- --nocapture || status=1
    # These kill or restart servers and services, or load the machine: one at a time,
    # with their figures printed (crash cases verified, load operations and peak RSS).
    # The load runs longer here: two API servers share the stack.
    PAN_LOAD_SECS="${PAN_LOAD_SECS:-120}" cargo test -p pantests --no-fail-fast \
        --test full_stack --test crash --test load \
        -- --include-ignored --test-threads=1 --nocapture || status=1
fi

exit $status
