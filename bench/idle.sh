#!/usr/bin/env bash
# bench/idle.sh — memory per idle keep-alive connection: ringway and HAProxy, one run.
#
# For each case a fresh proxy (one shard / one thread) is started in front of one
# ringway-origin, and `ringway-bench idle` opens N connections, sends one request on each,
# reads the responses and reports the growth of the proxy's resident set (VmRSS) per
# connection once it has settled. Cases:
#   h1-client          HTTP/1.1 clients; `reuse always`, so one backend connection serves all
#   h2-client          the same with HTTP/2 (h2c, prior knowledge), one stream each
#   h1-client+backend  `reuse safe`: each client's first request gets its own backend
#                      connection, so N idle pooled backend connections are held too;
#                      the backend's cost is this row minus h1-client
# HAProxy runs the client cases (skipped, with a note, when it is not installed).
#
#   bench/idle.sh              # N=5000 and N=10000
#   NS="5000" bench/idle.sh    # one size
#   RINGWAY=/path/to/ringway bench/idle.sh   # another ringway binary (before/after)
#   BIN_DIR=dir bench/idle.sh               # binaries from dir (default target/release)
#
# Needs `ulimit -n` above 2N+100 (it raises the soft limit as far as the hard one allows).
# Measures memory only: safe to run on a busy machine. Each case listens on its own
# port, from PORT+1 (default 19701; admin from 19801).
set -euo pipefail
cd "$(dirname "$0")/.."
REL=${BIN_DIR:-$PWD/target/release}
RINGWAY=${RINGWAY:-$REL/ringway}
BENCH=$REL/ringway-bench
ORIGIN=$REL/ringway-origin
NS=${NS:-"5000 10000"}
PORT=${PORT:-19700}
ADMIN=${ADMIN:-19800}
for b in "$RINGWAY" "$BENCH" "$ORIGIN"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p ringway -p ringway-bench" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

"$ORIGIN" --listen 127.0.0.1:0 > "$TMP/origin.out" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$TMP/origin.out" && break; sleep 0.1; done
OADDR=$(grep -o '127.0.0.1:[0-9]*' "$TMP/origin.out" | head -1)

# wait_port PORT: until something accepts on it (bounded).
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# probe SYSTEM CASE N PID [bench flags]
probe() {
  local system=$1 case=$2 n=$3 pid=$4; shift 4
  local json
  json=$("$BENCH" idle "http://127.0.0.1:$PORT/" -c "$n" --pid "$pid" --json "$@")
  python3 -c 'import json,sys
r=json.loads(sys.argv[4])
print("| %s | %s | %s | %d | %d | %.0f |" % (sys.argv[1], sys.argv[2], sys.argv[3], r["rss_before"] // 1024, r["rss_after"] // 1024, r["per_conn"]))' \
    "$system" "$case" "$n" "$json"
}

ringway_case() {
  local case=$1 n=$2 reuse=$3; shift 3
  PORT=$((PORT + 1)); ADMIN=$((ADMIN + 1))
  "$RINGWAY" --listen 127.0.0.1:$PORT --admin 127.0.0.1:$ADMIN --shards 1 --backend "$OADDR" \
    --reuse "$reuse" --access-log off --pool-max-idle 30000 --max-conns-per-shard 30000 \
    --timeout-client-idle 600s --pool-purge-delay 600s > "$TMP/ringway.out" 2> "$TMP/ringway.err" &
  local pid=$!; PIDS+=($pid)
  wait_port $PORT || { echo "ringway did not start:" >&2; cat "$TMP/ringway.err" >&2; exit 1; }
  probe ringway "$case" "$n" "$pid" "$@"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

haproxy_case() {
  local case=$1 n=$2 reuse=$3 proto=${4:-}; shift 3; [ $# -gt 0 ] && shift
  PORT=$((PORT + 1))
  cat > "$TMP/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn $((n + 100))
defaults
  mode http
  timeout connect 3s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
  http-reuse $reuse
frontend f
  bind 127.0.0.1:$PORT $proto
  default_backend b
backend b
  server s1 $OADDR
CFG
  haproxy -f "$TMP/haproxy.cfg" -db > "$TMP/haproxy.log" 2>&1 &
  local pid=$!; PIDS+=($pid)
  wait_port $PORT || { echo "haproxy did not start:" >&2; cat "$TMP/haproxy.log" >&2; exit 1; }
  probe haproxy "$case" "$n" "$pid" "$@"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| system | case | connections | RSS before (KiB) | RSS after (KiB) | bytes per connection |"
echo "| --- | --- | --- | --- | --- | --- |"
for n in $NS; do
  ringway_case h1-client "$n" always
  ringway_case h2-client "$n" always --http2
  ringway_case h1-client+backend "$n" safe
  if command -v haproxy >/dev/null; then
    haproxy_case h1-client "$n" always
    haproxy_case h2-client "$n" always "proto h2" --http2
  else
    echo "| haproxy | (not installed) | $n | | | |"
  fi
done
