#!/usr/bin/env bash
# bench/instructions.sh — user-space instructions per proxied request (valgrind callgrind),
# for before/after comparisons on a busy machine where CPU time means little.
#
# Starts one ringway-origin and, per binary, ringway (one shard, `--reuse always`,
# `--access-log off` unless ACCESS_LOG names a file) under `valgrind --tool=callgrind`.
# After a warm-up of WARM requests (pool filled, buffers pooled) the counters are zeroed (`callgrind_control -z`), a
# fixed-count `ringway-bench -n N -c C` run goes through the proxy, and the counters are
# dumped (`callgrind_control -d`): the dump holds exactly the instructions the proxy's
# threads executed in user space during the measured requests (kernel time is not
# counted). Instructions per request = that total / N. Repeat runs agree to about 1%.
#
#   cargo build --release -p ringway -p ringway-bench
#   bench/instructions.sh                                   # 13-byte keep-alive requests
#   RINGWAY_BEFORE=/path/to/old/ringway bench/instructions.sh   # before/after, one run
#   BENCH_ARGS="--h2c" bench/instructions.sh               # extra ringway-bench flags
#   ACCESS_LOG=/tmp/access.log bench/instructions.sh       # with the access log on (default off)
#   KEEP=/tmp/cg bench/instructions.sh                     # keep the callgrind files, then
#     callgrind_annotate --inclusive=yes /tmp/cg/ringway.cg.1 | less
#
# Needs valgrind (apt-get install valgrind). Ports from PORT+1 (default 19950).
set -euo pipefail
cd "$(dirname "$0")/.."
REL=${BIN_DIR:-$PWD/target/release}
RINGWAY=${RINGWAY:-$REL/ringway}
BENCH=$REL/ringway-bench
ORIGIN=$REL/ringway-origin
N=${N:-5000}
C=${C:-32}
WARM=${WARM:-2000}
PORT=${PORT:-19950}
BENCH_ARGS=${BENCH_ARGS:-}
URL_PATH=${URL_PATH:-/}
for b in "$RINGWAY" "$BENCH" "$ORIGIN"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p ringway -p ringway-bench" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
TMP=${KEEP:-$(mktemp -d)}
mkdir -p "$TMP"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

"$ORIGIN" --listen 127.0.0.1:0 > "$TMP/origin.out" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$TMP/origin.out" && break; sleep 0.1; done
OADDR=$(grep -o '127.0.0.1:[0-9]*' "$TMP/origin.out" | head -1)
[ -n "$OADDR" ] || { echo "origin did not start" >&2; cat "$TMP/origin.out" >&2; exit 1; }

wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.2; done; return 1; }

measure() { # measure NAME BINARY: prints one table row
  PORT=$((PORT + 2))
  # shellcheck disable=SC2086
  valgrind --tool=callgrind --callgrind-out-file="$TMP/$1.cg" \
    "$2" --listen 127.0.0.1:$PORT --admin 127.0.0.1:$((PORT + 1)) --shards 1 \
    --backend "$OADDR" --reuse always --access-log "${ACCESS_LOG:-off}" --log warn > "$TMP/$1.log" 2>&1 &
  local vp=$!; PIDS+=($vp)
  wait_port $PORT || { echo "$1 did not start:" >&2; cat "$TMP/$1.log" >&2; exit 1; }
  # shellcheck disable=SC2086
  "$BENCH" "http://127.0.0.1:$PORT$URL_PATH" -c "$C" -n "$WARM" -q --json $BENCH_ARGS > /dev/null
  callgrind_control -z $vp > /dev/null 2>&1
  # shellcheck disable=SC2086
  "$BENCH" "http://127.0.0.1:$PORT$URL_PATH" -c "$C" -n "$N" -q --json $BENCH_ARGS > "$TMP/$1.json"
  callgrind_control -d $vp > /dev/null 2>&1
  for _ in $(seq 100); do [ -s "$TMP/$1.cg.1" ] && break; sleep 0.1; done
  kill $vp; wait $vp 2>/dev/null || true
  python3 - "$1" "$TMP/$1.json" "$TMP/$1.cg.1" <<'PY'
import json, sys
name, load, cg = sys.argv[1:]
r = json.load(open(load))
if r["errors"]["total"]:
    sys.exit("%s: load run had %d errors" % (name, r["errors"]["total"]))
ir = next(int(l.split()[1]) for l in open(cg) if l.startswith("summary:"))
print("| %s | %d | %d | %.0f |" % (name, r["requests"], ir, ir / r["requests"]))
PY
}

echo "User-space instructions per request (callgrind), one shard, $C connections, $N requests"
echo
echo "| system | requests | instructions | per request |"
echo "| --- | --- | --- | --- |"
measure ringway "$RINGWAY"
[ -n "${RINGWAY_BEFORE:-}" ] && measure ringway-before "$RINGWAY_BEFORE"
exit 0
