#!/usr/bin/env bash
# bench/instructions-h2.sh — user-space instructions and heap allocations per request of the
# HTTP/2 front (h2c, `h2load -c 4 -m 16`) to an HTTP/1.1 origin, counted by valgrind's
# callgrind: numbers that do not depend on how busy the machine is (CPU time does).
#
# Each system (ringway, optionally a second ringway binary) runs with one shard /
# one thread under `valgrind --tool=callgrind --instr-atstart=no` in front of the same
# `ringway-origin`. After a warm-up run, instrumentation is switched on
# (`callgrind_control -i on`) for one fixed-count `h2load -n N -c 4 -m 16` run, then off,
# and the profile is dumped:
#   Ir/req      instructions executed in user space (every thread), minus the idle
#               loop's rate (measured right after, instrumented with no load, for
#               IDLE_S seconds) times the run's wall time, divided by N;
#   allocs/req  calls to malloc, calloc, realloc, posix_memalign, aligned_alloc and
#               memalign during the run (the idle loop's rate taken out the same way),
#               divided by N.
# Then, without valgrind, the CPU-µs per request from /proc/PID/stat (utime+stime) over
# one fixed-count run of CPU_N requests: meaningful only on a quiet machine.
# Caveat: callgrind counts each iteration of a `rep movs`/`rep stos` as an instruction,
# so large memset/memcpy weigh more in Ir than in cycles.
#
#   bench/instructions-h2.sh                         # ringway (target/release)
#   RINGWAY_BEFORE=/tmp/old/ringway bench/instructions-h2.sh   # adds a ringway-before row
#   KEEP=/tmp/cg bench/instructions-h2.sh            # keeps the callgrind profiles there
#                                                 # (callgrind_annotate --tree=caller ...)
# h2o is not measured here: callgrind_control (vgdb) cannot reach a process blocked in
# epoll_wait without ptrace, which this environment refuses; ringway's loop wakes often.
# Needs valgrind and h2load (nghttp2-client). Ports from PORT+1 (default 23700; ports in use are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
REL=${BIN_DIR:-$PWD/target/release}
RINGWAY=${RINGWAY:-$REL/ringway}
ORIGIN=$REL/ringway-origin
N=${N:-4000}
WARM=${WARM:-1000}
CPU_N=${CPU_N:-50000}
IDLE_S=${IDLE_S:-3}
PORT=${PORT:-23700}
KEEP=${KEEP:-}
for b in "$RINGWAY" "$ORIGIN"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p ringway" >&2; exit 1; }
done
for t in valgrind callgrind_control h2load; do
  command -v $t >/dev/null || { echo "$t is not installed (apt-get install valgrind nghttp2-client)" >&2; exit 1; }
done
CLK_TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

"$ORIGIN" --listen 127.0.0.1:0 > "$TMP/origin.out" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$TMP/origin.out" && break; sleep 0.1; done
OADDR=$(grep -o '127.0.0.1:[0-9]*' "$TMP/origin.out" | head -1)
[ -n "$OADDR" ] || { echo "origin did not start" >&2; exit 1; }

in_use() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
# The next port after PORT that nothing listens on (nor on its admin port, +50).
next_port() { PORT=$((PORT + 1)); while in_use $PORT || in_use $((PORT + 50)); do PORT=$((PORT + 1)); done; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# The command line of system $1 listening on port $2.
cmd_of() {
  case $1 in
    ringway) echo "$RINGWAY --listen 127.0.0.1:$2 --admin 127.0.0.1:$(($2 + 50)) --shards 1 --backend $OADDR --reuse always --access-log off --log warn" ;;
    ringway-before) echo "$RINGWAY_BEFORE --listen 127.0.0.1:$2 --admin 127.0.0.1:$(($2 + 50)) --shards 1 --backend $OADDR --reuse always --access-log off --log warn" ;;
  esac
}

# Allocation calls in a callgrind profile: every `calls=` line under a `cfn` that names
# an allocator entry point (names are compressed to `(id)` after their first use).
allocs_in() {
  python3 - "$1" <<'PY'
import re, sys
names, cur, total = {}, None, 0
alloc = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2).strip()
        if line.startswith("cfn="):
            cur = names.get(m.group(1))
        continue
    if line.startswith("calls=") and cur is not None:
        if cur.split(" ")[0] in alloc:
            total += int(line.split("=")[1].split()[0])
        cur = None
print(total)
PY
}

SYSTEMS=(ringway)
[ -n "${RINGWAY_BEFORE:-}" ] && SYSTEMS+=(ringway-before)
ROWS=()
for s in "${SYSTEMS[@]}"; do
  next_port
  # shellcheck disable=SC2046
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/cg.$s.%p" \
    $(cmd_of "$s" $PORT) > "$TMP/$s.vg.log" 2>&1 &
  VPID=$!; PIDS+=($VPID)
  wait_port $PORT || { echo "$s did not start under valgrind:" >&2; cat "$TMP/$s.vg.log" >&2; exit 1; }
  URL="http://127.0.0.1:$PORT/"
  h2load -n "$WARM" -c 4 -m 16 "$URL" > "$TMP/$s.warm.h2load"
  callgrind_control -z $VPID > /dev/null 2>&1
  callgrind_control -i on $VPID > /dev/null 2>&1
  t0=$(date +%s.%N)
  h2load -n "$N" -c 4 -m 16 "$URL" > "$TMP/$s.h2load"
  t1=$(date +%s.%N)
  callgrind_control -i off $VPID > /dev/null 2>&1
  callgrind_control -d $VPID > /dev/null 2>&1
  ok=$(awk '/^requests:/ {print $8}' "$TMP/$s.h2load")
  [ "$ok" = "$N" ] || { echo "$s: $ok of $N requests succeeded" >&2; cat "$TMP/$s.warm.h2load" "$TMP/$s.h2load" "$TMP/$s.vg.log" >&2; exit 1; }
  # The idle loop's rate, to take out of the run's count.
  callgrind_control -z $VPID > /dev/null 2>&1
  callgrind_control -i on $VPID > /dev/null 2>&1
  sleep "$IDLE_S"
  callgrind_control -i off $VPID > /dev/null 2>&1
  callgrind_control -d $VPID > /dev/null 2>&1
  run=$(ls "$TMP"/cg."$s".*.1); idle=$(ls "$TMP"/cg."$s".*.2)
  ir=$(awk '/^totals:/ {print $2}' "$run"); ir_idle=$(awk '/^totals:/ {print $2}' "$idle")
  al=$(allocs_in "$run"); al_idle=$(allocs_in "$idle")
  [ -n "$KEEP" ] && { mkdir -p "$KEEP"; cp "$run" "$KEEP/cg.$s.run"; cp "$idle" "$KEEP/cg.$s.idle"; }
  kill $VPID 2>/dev/null || true; wait $VPID 2>/dev/null || true

  # Untraced: CPU time per request.
  next_port
  # shellcheck disable=SC2046
  $(cmd_of "$s" $PORT) > "$TMP/$s.log" 2>&1 &
  PPID_=$!; PIDS+=($PPID_)
  wait_port $PORT || { echo "$s did not start:" >&2; cat "$TMP/$s.log" >&2; exit 1; }
  h2load -n "$WARM" -c 4 -m 16 "http://127.0.0.1:$PORT/" > /dev/null
  c0=$(awk '{print $14 + $15}' /proc/$PPID_/stat)
  h2load -n "$CPU_N" -c 4 -m 16 "http://127.0.0.1:$PORT/" > "$TMP/$s.cpu.h2load"
  c1=$(awk '{print $14 + $15}' /proc/$PPID_/stat)
  kill $PPID_ 2>/dev/null || true; wait $PPID_ 2>/dev/null || true

  ROWS+=("$(python3 -c "
n, ir, idle, idle_s, wall, al, al_idle = $N, $ir, $ir_idle, $IDLE_S, $t1 - $t0, $al, $al_idle
cpu = ($c1 - $c0) / $CLK_TCK / $CPU_N * 1e6
print(f'| $s | {(ir - idle / idle_s * wall) / n:,.0f} | {ir / n:,.0f} | {(al - al_idle / idle_s * wall) / n:.1f} | {al / n:.1f} | {cpu:.1f} |')
")")
done
echo "| system | Ir/req (idle loop taken out) | Ir/req (raw) | allocs/req (idle taken out) | allocs/req (raw) | CPU-µs/req (untraced, $CPU_N req) |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
echo "(h2load -n $N -c 4 -m 16 through the h2c front to ringway-origin's 13-byte answer; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
