#!/usr/bin/env bash
# bench/syscalls.sh — system calls and CPU time per proxied keep-alive request, ringway
# and HAProxy (and a second ringway binary, for before/after), one run.
#
# Each system runs as one shard / one thread in front of the same ringway-origin, with
# `reuse always`. Per round and system, two fixed-count runs of `ringway-bench -n N -c C`
# (HTTP/1.1 keep-alive, the origin's 13-byte body):
#   syscalls   `strace -c -f -p PID` attached for the run: every system call of every
#              thread, divided by the requests answered. strace slows each call down, so
#              this run is for the count only.
#   cpu        no tracer: utime+stime of the proxy (all threads, /proc/PID/stat) before
#              and after, divided by the requests: CPU-µs per request. Meaningful only on
#              a quiet machine with the proxy pinned (PROXY_CPU); on a busy one read the
#              syscall column and the ratio between systems of one interleaved run.
# Systems are interleaved (A B C, A B C, ...) for ROUNDS rounds; the table shows medians,
# plus the top system calls of ringway's last traced run.
#
#   bench/syscalls.sh                            # ringway and HAProxy, 3 rounds
#   RINGWAY_BEFORE=/path/to/old/ringway bench/syscalls.sh   # adds a ringway-before row
#   N=100000 C=32 ROUNDS=5 PROXY_CPU=0 LOAD_CPU=1 bench/syscalls.sh
#   JSON=out.jsonl bench/syscalls.sh             # one JSON object per measured run, too
#   URLPATH=/size/16384 bench/syscalls.sh        # another response (ringway-origin paths)
#   LOAD_ARGS=--close C=16 bench/syscalls.sh     # a new client connection per request
#
# Needs strace (apt-get install strace) and permission to trace the proxies it starts
# (its own children: fine under the default Yama ptrace_scope 1). Ports from PORT+1
# (default 19900).
set -euo pipefail
cd "$(dirname "$0")/.."
REL=${BIN_DIR:-$PWD/target/release}
RINGWAY=${RINGWAY:-$REL/ringway}
BENCH=$REL/ringway-bench
ORIGIN=$REL/ringway-origin
N=${N:-50000}
C=${C:-32}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-19900}
PROXY_CPU=${PROXY_CPU:-}
LOAD_CPU=${LOAD_CPU:-}
JSON=${JSON:-}
URLPATH=${URLPATH:-/}
LOAD_ARGS=${LOAD_ARGS:-} # more ringway-bench flags, e.g. --close (a connection per request)
for b in "$RINGWAY" "$BENCH" "$ORIGIN"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p ringway -p ringway-bench" >&2; exit 1; }
done
command -v strace >/dev/null || { echo "strace is not installed (apt-get install strace)" >&2; exit 1; }
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
[ -n "$JSON" ] && : > "$JSON"

pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }

# shellcheck disable=SC2046
$(pin "$LOAD_CPU") "$ORIGIN" --listen 127.0.0.1:0 > "$TMP/origin.out" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$TMP/origin.out" && break; sleep 0.1; done
OADDR=$(grep -o '127.0.0.1:[0-9]*' "$TMP/origin.out" | head -1)
[ -n "$OADDR" ] || { echo "origin did not start" >&2; cat "$TMP/origin.out" >&2; exit 1; }

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

declare -A PID_OF URL
SYSTEMS=(ringway)
[ -n "${RINGWAY_BEFORE:-}" ] && SYSTEMS+=(ringway-before)
command -v haproxy >/dev/null && SYSTEMS+=(haproxy)

start_ringway() { # start_ringway NAME BINARY
  PORT=$((PORT + 1))
  # shellcheck disable=SC2046
  $(pin "$PROXY_CPU") "$2" --listen 127.0.0.1:$PORT --admin 127.0.0.1:$((PORT + 50)) --shards 1 \
    --backend "$OADDR" --reuse always --access-log off --log warn > "$TMP/$1.log" 2>&1 &
  PID_OF[$1]=$!; PIDS+=($!); URL[$1]="http://127.0.0.1:$PORT$URLPATH"
  wait_port $PORT || { echo "$1 did not start:" >&2; cat "$TMP/$1.log" >&2; exit 1; }
}
start_haproxy() {
  PORT=$((PORT + 1))
  cat > "$TMP/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 2000
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind 127.0.0.1:$PORT
  default_backend b
backend b
  server s1 $OADDR
CFG
  # shellcheck disable=SC2046
  $(pin "$PROXY_CPU") haproxy -f "$TMP/haproxy.cfg" -db > "$TMP/haproxy.log" 2>&1 &
  PID_OF[haproxy]=$!; PIDS+=($!); URL[haproxy]="http://127.0.0.1:$PORT$URLPATH"
  wait_port $PORT || { echo "haproxy did not start:" >&2; cat "$TMP/haproxy.log" >&2; exit 1; }
}
start_ringway ringway "$RINGWAY"
[ -n "${RINGWAY_BEFORE:-}" ] && start_ringway ringway-before "$RINGWAY_BEFORE"
command -v haproxy >/dev/null && start_haproxy

ticks() { # utime and stime of the whole process (all threads), "U S"
  awk '{print $14, $15}' "/proc/$1/stat"
}
segs() { # TCP segments sent on this machine so far (every socket: the loopback hops)
  if command -v nstat >/dev/null; then nstat -a -s TcpOutSegs 2>/dev/null | awk '$1 == "TcpOutSegs" {print $2}'; else echo 0; fi
}
load() { # load SYSTEM: one fixed-count run; prints the requests answered
  # shellcheck disable=SC2046
  $(pin "$LOAD_CPU") "$BENCH" "${URL[$1]}" -c "$C" -n "$N" $LOAD_ARGS -q --json > "$TMP/load.json"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); e=r["errors"]["total"]
if e: sys.exit("load run had %d errors" % e)
print(r["requests"])' "$TMP/load.json"
}

for s in "${SYSTEMS[@]}"; do # warm up (pool filled, caches hot)
  "$BENCH" "${URL[$s]}" -c "$C" -n 2000 -q --json > /dev/null
done

for r in $(seq "$ROUNDS"); do
  for s in "${SYSTEMS[@]}"; do
    pid=${PID_OF[$s]}
    strace -c -f -p "$pid" -o "$TMP/strace.$s" 2> "$TMP/strace.err" & spid=$!
    # strace -c prints nothing until it detaches; wait until it is attached to a thread.
    for _ in $(seq 100); do
      grep -q "TracerPid:[[:space:]]*$spid" /proc/"$pid"/status 2>/dev/null && break; sleep 0.05
    done
    reqs=$(load "$s")
    kill -INT "$spid"; wait "$spid" 2>/dev/null || true
    calls=$(awk '$NF == "total" {print $4}' "$TMP/strace.$s")
    [ "$s" = ringway ] && cp "$TMP/strace.$s" "$TMP/strace.last"
    g0=$(segs); t0=$(ticks "$pid"); reqs2=$(load "$s"); t1=$(ticks "$pid"); g1=$(segs)
    python3 - "$s" "$r" "$reqs" "$calls" "$reqs2" "$t0" "$t1" "$CLK_TCK" "$TMP/strace.$s" "$g0" "$g1" >> "$TMP/results.jsonl" <<'PY'
import json, sys
s, r, reqs, calls, reqs2, t0, t1, hz, sfile, g0, g1 = sys.argv[1:]
(u0, k0), (u1, k1) = (map(int, t0.split())), (map(int, t1.split()))
us = lambda ticks: ticks * 1e6 / int(hz) / int(reqs2)
top = {}
for line in open(sfile):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total", "syscall"):
        top[f[-1]] = int(f[3])
print(json.dumps({"system": s, "round": int(r), "requests": int(reqs), "syscalls": int(calls),
    "syscalls_per_req": int(calls) / int(reqs), "cpu_requests": int(reqs2),
    "cpu_us_per_req": us(u1 + k1 - u0 - k0), "user_us_per_req": us(u1 - u0),
    "kernel_us_per_req": us(k1 - k0), "tcp_segments_per_req": (int(g1) - int(g0)) / int(reqs2),
    "by_call": top}))
PY
  done
done
[ -n "$JSON" ] && cp "$TMP/results.jsonl" "$JSON"

python3 - "$TMP/results.jsonl" "$N" "$C" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("HTTP/1.1 keep-alive, %s connections, %s requests per run, one shard/thread; medians of %d rounds"
      % (sys.argv[3], sys.argv[2], max(r["round"] for r in rows)))
print()
print("| system | syscalls/req | CPU-µs/req | user µs | kernel µs | TCP segments/req | per call (last round) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for s in dict.fromkeys(r["system"] for r in rows):
    mine = [r for r in rows if r["system"] == s]
    last = mine[-1]
    calls = ", ".join("%s %.2f" % (k, v / last["requests"])
                      for k, v in sorted(last["by_call"].items(), key=lambda kv: -kv[1])[:5])
    med = lambda k: statistics.median(r.get(k, 0) for r in mine)
    print("| %s | %.2f | %.1f | %.1f | %.1f | %.2f | %s |" % (s, med("syscalls_per_req"),
          med("cpu_us_per_req"), med("user_us_per_req"), med("kernel_us_per_req"),
          med("tcp_segments_per_req"), calls))
PY
