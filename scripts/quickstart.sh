#!/usr/bin/env bash
# Mounts a working pan drive at /mnt/pan on the embedded default (no services):
# installs fuse3 if missing, builds, starts panserver in the background,
# creates (or reuses) a user, logs in and mounts.
#
#   scripts/quickstart.sh          start everything (safe to run twice)
#   scripts/quickstart.sh stop     unmount and stop the server
#
# Settings (environment): PAN_MOUNT (/mnt/pan), PAN_LISTEN (127.0.0.1:8080),
# PAN_DATA (~/.local/share/pan), PAN_USER ($USER or "pan").
set -euo pipefail
cd "$(dirname "$0")/.."

MOUNT="${PAN_MOUNT:-/mnt/pan}"
LISTEN="${PAN_LISTEN:-127.0.0.1:8080}"
DATA="${PAN_DATA:-${XDG_DATA_HOME:-$HOME/.local/share}/pan}"
PANUSER="${PAN_USER:-${USER:-pan}}"
[ ${#PANUSER} -ge 3 ] || PANUSER="pan-$PANUSER"
STATE="${XDG_CONFIG_HOME:-$HOME/.config}/pan"
PIDFILE="$STATE/quickstart-server.pid"
PASSFILE="$STATE/quickstart-password"
BIN="$PWD/target/release"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

server_running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

if [ "${1:-}" = "stop" ]; then
    if mountpoint -q "$MOUNT" 2>/dev/null || grep -q " $MOUNT fuse" /proc/mounts; then
        "$BIN/panfs" umount "$MOUNT" || true
    fi
    if server_running; then
        kill "$(cat "$PIDFILE")"
        rm -f "$PIDFILE"
        echo "panserver stopped"
    fi
    exit 0
fi

# 1. Packages: FUSE, and a compiler for the build.
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "quickstart: cargo is required (https://rustup.rs)" >&2; exit 1; }

# 2. Build.
echo "building (release)..."
cargo build --release --bins -q

# 3. The server, in the background.
mkdir -p "$STATE" "$DATA"
chmod 700 "$STATE"
if ! server_running; then
    "$BIN/panserver" serve --listen "$LISTEN" --data "$DATA" >>"$DATA/panserver.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do
        curl -fsS "http://$LISTEN/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://$LISTEN/" >/dev/null || { echo "panserver did not start; see $DATA/panserver.log" >&2; exit 1; }
    echo "panserver running on http://$LISTEN (data in $DATA)"
fi

# 4. A user with a generated password, kept (mode 0600) for re-runs.
if [ ! -s "$PASSFILE" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 >"$PASSFILE")
    printf '%s\n' "$(cat "$PASSFILE")" | "$BIN/panserver" user add "$PANUSER" --password-stdin --data "$DATA" >/dev/null 2>&1 || true
fi
printf '%s\n' "$(cat "$PASSFILE")" | "$BIN/panfs" login --server "http://$LISTEN" --user "$PANUSER" --password-stdin

# 5. The mount.
$SUDO mkdir -p "$MOUNT"
if grep -q " $MOUNT fuse" /proc/mounts; then
    if ! ls "$MOUNT" >/dev/null 2>&1; then
        "$BIN/panfs" umount "$MOUNT" || true   # stale: clean it
    fi
fi
if ! grep -q " $MOUNT fuse" /proc/mounts; then
    if [ -w "$MOUNT" ]; then
        "$BIN/panfs" mount "$MOUNT"
    else
        $SUDO chown "$(id -u):$(id -g)" "$MOUNT"
        "$BIN/panfs" mount "$MOUNT"
    fi
fi

cat <<MSG

pan is mounted at $MOUNT (user $PANUSER, password in $PASSFILE).

Try:
  cp -r /etc/ssl $MOUNT/ && ls -la $MOUNT/ssl
  sha1sum $MOUNT/ssl/openssl.cnf /etc/ssl/openssl.cnf
  $BIN/panfs status

Stop:  scripts/quickstart.sh stop
MSG
