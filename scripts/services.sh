#!/usr/bin/env bash
# The full stack's services, for tests and for trying pan on one machine:
# MariaDB, Redis, RabbitMQ and a one-node Ceph cluster with the RADOS Gateway (S3).
# Each is installed from Debian's packages, configured under DIR, started on
# 127.0.0.1 only with generated passwords, and stopped again by `down`.
#
#   scripts/services.sh up [DIR]       install, configure, start; prints the PAN_* settings
#   scripts/services.sh env [DIR]      print the PAN_* settings of running services
#   scripts/services.sh status [DIR]   which services are up
#   scripts/services.sh down [DIR]     stop exactly the processes `up` started
#   scripts/services.sh restart|stop|start NAME [DIR]
#                                      one service: mariadb, redis, rabbitmq, ceph, or rgw
#                                      (the S3 gateway alone, to simulate a store outage)
#
# DIR defaults to /var/tmp/pan-services. Set PAN_SERVICES to a subset
# ("mariadb redis rabbitmq ceph") to manage fewer.
set -euo pipefail

cmd="${1:-status}"
case "$cmd" in
    restart | stop | start)
        name="${2:?$cmd needs a service name}"
        shift
        ;;
esac
DIR="$(realpath -m "${2:-/var/tmp/pan-services}")"
SERVICES="${PAN_SERVICES:-mariadb redis rabbitmq ceph}"

MYSQL_PORT=13306
REDIS_PORT=16379
AMQP_PORT=15682
AMQP_DIST_PORT=25682
EPMD_PORT=14369
RGW_PORT=17480
MON_V2=13300
MON_V1=13301

log() { printf 'services: %s\n' "$*" >&2; }
has() { [[ " $SERVICES " == *" $1 "* ]]; }

secret() { # name -> a generated secret, kept in DIR/secrets (0600)
    local file="$DIR/secrets/$1"
    if [ ! -s "$file" ]; then
        (umask 077; mkdir -p "$DIR/secrets"; head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 28 >"$file")
    fi
    cat "$file"
}

access_key() { # S3 access keys are upper-case letters and digits
    local file="$DIR/secrets/s3-access-key"
    if [ ! -s "$file" ]; then
        (umask 077; mkdir -p "$DIR/secrets"; head -c 40 /dev/urandom | base32 | tr -dc 'A-Z0-9' | head -c 20 >"$file")
    fi
    cat "$file"
}

# A pid is ours when its command line names DIR or it runs inside DIR
# (some daemons rewrite their command line).
ours() {
    [ -r "/proc/$1/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$DIR" && return 0
    [[ "$(readlink "/proc/$1/cwd" 2>/dev/null)" == "$DIR"* ]]
}
pid_of() { [ -s "$DIR/pids/$1" ] && cat "$DIR/pids/$1"; }
running() { local p; p=$(pid_of "$1") && kill -0 "$p" 2>/dev/null && ours "$p"; }

start_bg() { # name command... : starts detached, records the pid
    local name=$1; shift
    mkdir -p "$DIR/pids" "$DIR/logs"
    (cd "$DIR" && exec setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null) &
    echo $! >"$DIR/pids/$name"
}

stop() { # name [signal]
    local p
    p=$(pid_of "$1") || return 0
    if kill -0 "$p" 2>/dev/null && ours "$p"; then
        kill "-${2:-TERM}" "$p" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
    fi
    rm -f "$DIR/pids/$1"
}

wait_for() { # name seconds command... : until command succeeds, name's process exits, or time is up
    local name=$1 deadline=$((SECONDS + $2)); shift 2
    while [ $SECONDS -lt $deadline ]; do
        "$@" >/dev/null 2>&1 && return 0
        running "$name" || { log "$name exited:"; tail -n 5 "$DIR/logs/$name.log" >&2; return 1; }
        sleep 0.1
    done
    log "$name did not come up in time; see $DIR/logs"
    return 1
}

install_packages() {
    local need=()
    has mariadb && ! command -v mariadbd >/dev/null && need+=(mariadb-server mariadb-client)
    has redis && ! command -v redis-server >/dev/null && need+=(redis-server)
    has rabbitmq && ! command -v rabbitmq-server >/dev/null && need+=(rabbitmq-server)
    has ceph && ! command -v radosgw >/dev/null && need+=(ceph-mon ceph-osd radosgw ceph-common)
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3)
    [ ${#need[@]} -eq 0 ] && return 0
    log "installing ${need[*]}"
    # Keep the packages' own init scripts from starting system-wide daemons.
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; created=1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ -n "$created" ] && rm -f $policy
    return 0
}

# ---------------------------------------------------------------- MariaDB
mariadb_up() {
    running mariadb && return 0
    local data="$DIR/mariadb"
    if [ ! -d "$data/mysql" ]; then
        mkdir -p "$data"
        mariadb-install-db --user=root --datadir="$data" --auth-root-authentication-method=socket >"$DIR/logs/mariadb-install.log" 2>&1
    fi
    start_bg mariadb mariadbd --user=root --datadir="$data" --socket="$DIR/mariadb.sock" \
        --port=$MYSQL_PORT --bind-address=127.0.0.1 --pid-file="$DIR/mariadb.pid" \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_bin --skip-name-resolve \
        --innodb-buffer-pool-size=256M --max-connections=500 --skip-log-bin \
        --innodb-flush-log-at-trx-commit=2
    wait_for mariadb 60 mariadb --socket="$DIR/mariadb.sock" -uroot -e 'SELECT 1'
    local pw; pw=$(secret mariadb)
    mariadb --socket="$DIR/mariadb.sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS pan CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'pan'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'pan'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON \`pan\`.* TO 'pan'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`pan\\_%\`.* TO 'pan'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}
mariadb_down() { stop mariadb; }

# ---------------------------------------------------------------- Redis
redis_up() {
    running redis && return 0
    mkdir -p "$DIR/redis"
    local pw; pw=$(secret redis)
    # The password goes in a config file, not on the command line.
    (umask 077; printf 'requirepass %s\n' "$pw" >"$DIR/redis/auth.conf")
    start_bg redis redis-server "$DIR/redis/auth.conf" --bind 127.0.0.1 --port $REDIS_PORT \
        --dir "$DIR/redis" --appendonly yes --save "" --daemonize no --protected-mode yes
    wait_for redis 30 env REDISCLI_AUTH="$pw" redis-cli -p $REDIS_PORT ping
}
redis_down() { stop redis; }

# ---------------------------------------------------------------- RabbitMQ
rabbit_env() {
    export HOME="$DIR/rabbitmq" RABBITMQ_NODENAME=pan@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$AMQP_PORT RABBITMQ_DIST_PORT=$AMQP_DIST_PORT \
        RABBITMQ_MNESIA_BASE="$DIR/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$DIR/rabbitmq/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbitmq/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$DIR/rabbitmq/rabbitmq" \
        ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$EPMD_PORT \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}
rabbitmq_up() {
    running rabbitmq && return 0
    mkdir -p "$DIR/rabbitmq/log"
    (
        rabbit_env
        echo '[].' >"$DIR/rabbitmq/enabled_plugins"
        printf 'loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%s\n' $AMQP_PORT >"$DIR/rabbitmq/rabbitmq.conf"
        start_bg rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server
        wait_for rabbitmq 120 /usr/lib/rabbitmq/bin/rabbitmqctl -q await_startup
        local pw; pw=$(secret rabbitmq)
        /usr/lib/rabbitmq/bin/rabbitmqctl -q add_vhost pan 2>/dev/null || true
        /usr/lib/rabbitmq/bin/rabbitmqctl -q add_user pan "$pw" 2>/dev/null || /usr/lib/rabbitmq/bin/rabbitmqctl -q change_password pan "$pw"
        /usr/lib/rabbitmq/bin/rabbitmqctl -q set_permissions -p pan pan '.*' '.*' '.*'
        /usr/lib/rabbitmq/bin/rabbitmqctl -q delete_user guest 2>/dev/null || true
    )
}
rabbitmq_down() {
    if running rabbitmq; then (rabbit_env; /usr/lib/rabbitmq/bin/rabbitmqctl -q stop >/dev/null 2>&1 || true); fi
    stop rabbitmq
    # epmd was started for our node, on our port: stop that one only.
    local p
    for p in $(pgrep -x epmd || true); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "ERL_EPMD_PORT=$EPMD_PORT"; then kill "$p" 2>/dev/null || true; fi
    done
}

# ---------------------------------------------------------------- Ceph + RGW
CEPH="$DIR/ceph"
ceph_cmd() { timeout 60 ceph -c "$CEPH/ceph.conf" --connect-timeout 30 "$@"; }
ceph_up() {
    running ceph-rgw && return 0
    mkdir -p "$CEPH"
    local fsid
    if [ ! -s "$CEPH/fsid" ]; then cat /proc/sys/kernel/random/uuid >"$CEPH/fsid"; fi
    fsid=$(cat "$CEPH/fsid")
    cat >"$CEPH/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $CEPH/keyring
run dir = $CEPH/run
log file = $CEPH/log/\$name.log
admin socket = $CEPH/run/\$name.asok
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
paxos propose interval = 0.01
mon warn on pool no redundancy = false
# The monitor's store is small; let a nearly full disk not stop it (default: 5% free).
mon data avail crit = 1
mon data avail warn = 2
[mon.a]
mon data = $CEPH/mon
[osd.0]
osd data = $CEPH/osd
osd objectstore = memstore
memstore device bytes = 8589934592
osd max object size = 134217728
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $CEPH/rgw
rgw gc obj min wait = 5
rgw gc processor period = 5
rgw dns name = localhost
CONF
    mkdir -p "$CEPH/run" "$CEPH/log" "$CEPH/rgw"
    if [ ! -d "$CEPH/mon/store.db" ]; then
        rm -rf "$CEPH/mon" "$CEPH/keyring"
        ceph-authtool --create-keyring "$CEPH/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
        ceph-authtool "$CEPH/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
        ceph-authtool "$CEPH/keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
        ceph-authtool "$CEPH/keyring" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
        monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]" "$CEPH/monmap" >/dev/null
        mkdir -p "$CEPH/mon"
        ceph-mon -c "$CEPH/ceph.conf" --mkfs -i a --monmap "$CEPH/monmap" --keyring "$CEPH/keyring" >/dev/null 2>&1
    fi
    running ceph-mon || start_bg ceph-mon ceph-mon -f -c "$CEPH/ceph.conf" -i a
    wait_for ceph-mon 60 ceph_cmd mon stat
    # memstore starts empty: the OSD is made anew at every start.
    if ! running ceph-osd; then
        rm -rf "$CEPH/osd"; mkdir -p "$CEPH/osd"
        local uuid; uuid=$(cat /proc/sys/kernel/random/uuid)
        ceph_cmd osd rm 0 >/dev/null 2>&1 || true
        ceph_cmd osd crush rm osd.0 >/dev/null 2>&1 || true
        ceph_cmd auth del osd.0 >/dev/null 2>&1 || true
        ceph_cmd auth import -i "$CEPH/keyring" >/dev/null 2>&1 || true
        ceph_cmd osd new "$uuid" 0 >/dev/null
        ceph-authtool "$CEPH/keyring" -p -n osd.0 >/dev/null
        ceph-osd -c "$CEPH/ceph.conf" -i 0 --mkfs --osd-uuid "$uuid" --keyring "$CEPH/keyring" >/dev/null 2>&1
        start_bg ceph-osd ceph-osd -f -c "$CEPH/ceph.conf" -i 0
        wait_for ceph-osd 60 bash -c "timeout 30 ceph -c '$CEPH/ceph.conf' --connect-timeout 20 osd dump | grep -q '^osd.0 up'"
        # memstore keeps its byte count unsigned, and some deletions take off
        # a little more than was added: once the tests had purged their
        # buckets it stood 1.2 MB below zero, wrapped round to 16 EiB, and the
        # OSD took itself for full and blocked every write. An object that is
        # never deleted keeps the count above zero.
        ceph_cmd osd pool create pan-ballast 1 1 >/dev/null 2>&1
        head -c 64M /dev/zero >"$CEPH/ballast"
        timeout 60 rados -c "$CEPH/ceph.conf" -p pan-ballast put ballast "$CEPH/ballast"
        rm -f "$CEPH/ballast"
    fi
    start_bg ceph-rgw radosgw -f -c "$CEPH/ceph.conf" -n client.rgw.a
    wait_for ceph-rgw 120 curl -fsS "http://127.0.0.1:$RGW_PORT/"
    local ak sk
    ak=$(access_key); sk=$(secret s3-secret)
    timeout 60 radosgw-admin -c "$CEPH/ceph.conf" --client-mount-timeout=30 user info --uid=pan >/dev/null 2>&1 ||
        timeout 60 radosgw-admin -c "$CEPH/ceph.conf" --client-mount-timeout=30 user create --uid=pan --display-name=pan \
            --access-key="$ak" --secret-key="$sk" >/dev/null
}
ceph_down() { stop ceph-rgw; stop ceph-osd; stop ceph-mon; }

# ---------------------------------------------------------------- settings
print_env() {
    has mariadb && echo "export PAN_DATABASE_URL='mysql://pan:$(secret mariadb)@127.0.0.1:$MYSQL_PORT/pan'"
    has redis && echo "export PAN_REDIS_URL='redis://:$(secret redis)@127.0.0.1:$REDIS_PORT/'"
    has rabbitmq && echo "export PAN_AMQP_URL='amqp://pan:$(secret rabbitmq)@127.0.0.1:$AMQP_PORT/pan'"
    if has ceph; then
        echo "export PAN_STORE='s3://pan?endpoint=http://127.0.0.1:$RGW_PORT&region=default&path_style=true'"
        echo "export PAN_S3_ACCESS_KEY='$(access_key)'"
        echo "export PAN_S3_SECRET_KEY='$(secret s3-secret)'"
    fi
    return 0
}

status() {
    local any=1
    for s in mariadb redis rabbitmq ceph-mon ceph-osd ceph-rgw; do
        if running "$s"; then echo "$s: up (pid $(pid_of "$s"))"; any=0; else echo "$s: down"; fi
    done
    return $any
}

case "$cmd" in
    up)
        mkdir -p "$DIR/logs" "$DIR/pids"
        install_packages
        start=$(date +%s)
        has mariadb && mariadb_up
        has redis && redis_up
        has rabbitmq && rabbitmq_up
        has ceph && ceph_up
        log "up in $(($(date +%s) - start)) s (data in $DIR)"
        print_env
        ;;
    env) print_env ;;
    restart | stop | start)
        # `rgw` is the S3 gateway alone (Ceph's data stays up), for store outages.
        case "$name" in
            mariadb | redis | rabbitmq | ceph) down="${name}_down" up="${name}_up" ;;
            rgw) down="stop ceph-rgw" up=ceph_up ;;
            *) echo "unknown service $name" >&2; exit 2 ;;
        esac
        if [ "$cmd" != start ]; then $down; fi
        if [ "$cmd" != stop ]; then $up; fi
        log "$name: $cmd done"
        ;;
    status) status ;;
    down)
        has ceph && ceph_down
        has rabbitmq && rabbitmq_down
        has redis && redis_down
        has mariadb && mariadb_down
        log "down"
        ;;
    *) echo "usage: $0 up|down|status|env [DIR]" >&2; exit 2 ;;
esac
