#!/usr/bin/env bash
# bench/run.sh — ringway side by side with HAProxy, nginx and h2o, on one machine.
#
# Runs the same workloads (ringway-bench as the client) through every system to the same
# ringway-origin, interleaved (A B C D, A B C D, ... for ROUNDS rounds within each workload),
# with CPUs assigned explicitly: the proxy under test gets PROXY_CPUS, the origin and the
# load generator share ORIGIN_CPUS/LOAD_CPUS. Each proxy's CPU time (utime+stime of its
# whole process tree, from /proc/PID/stat) is read before and after every run, giving
# proxy CPU-µs per request — the fairest figure when client and origin share a core.
# The origin direct (no proxy) is the ceiling row. Results: $OUT/results.jsonl, a table on
# stdout, docs/benchmarks.md and a latency-percentile plot (docs/benchmarks-latency.png).
#
#   bench/run.sh              # full run (5 s per cell, 3 rounds)
#   QUICK=1 bench/run.sh      # smoke run (2 s per cell)
#   bench/run.sh ceiling      # the load generator's own ceiling vs wrk and h2load
#   bench/run.sh syscalls     # system calls (strace -c) and CPU per keep-alive request,
#                             # ringway and HAProxy: bench/syscalls.sh
#   WORKLOADS="h2b-h1 h2b-h2" SYSTEMS="direct ringway haproxy" bench/run.sh
#                             # HTTP/2 backends: wrk and h2load through each proxy to
#                             # `ringway-origin --h2c` (nginx and h2o cannot: no h2 upstreams)
#
# Knobs (environment): QUICK ROUNDS DUR WARMUP PROXY_CPUS ORIGIN_CPUS LOAD_CPUS SYSTEMS
# WORKLOADS PORT_BASE OUT DOC BUILD (1: cargo build --release first) INSTALL (1: apt-get
# the missing proxies) RESUME (1: keep OUT's results of workloads not in WORKLOADS)
# RINGWAY_BEFORE (a second ringway binary, e.g. built from an earlier commit: add
# `ringway-before` to SYSTEMS to measure a change before and after in one interleaved run)
# BIN_DIR (where ringway, ringway-origin and ringway-bench are; default target/release,
# which BUILD=1 builds) PNG (the latency plot's path; default: beside DOC) EXTRAS (0: skip the system-call and
# idle-memory runs that follow the workloads) SYSCALLS_N IDLE_NS (their sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-compare}
# System calls and CPU per proxied keep-alive request, ringway and HAProxy (strace -c):
# a short separate run, see bench/syscalls.sh (its knobs: N C ROUNDS PROXY_CPU LOAD_CPU
# RINGWAY_BEFORE JSON).
if [ "$MODE" = syscalls ]; then exec "$ROOT/bench/syscalls.sh"; fi

QUICK=${QUICK:-0}
ROUNDS=${ROUNDS:-3}
if [ "$QUICK" = 1 ]; then DUR=${DUR:-2s}; WARMUP=${WARMUP:-0.5s}; else DUR=${DUR:-5s}; WARMUP=${WARMUP:-1s}; fi
PROXY_CPUS=${PROXY_CPUS:-0}
ORIGIN_CPUS=${ORIGIN_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-1}
SYSTEMS=${SYSTEMS:-"direct ringway haproxy nginx h2o"}
WORKLOADS=${WORKLOADS:-"h1-small h1-close h1-16k h1-1m h2-mux rate-50 rate-90 tls-h1 tls-h2 tls-full tls-resume h2b-h1 h2b-h2"}
PORT_BASE=${PORT_BASE:-18080}
OUT=${OUT:-bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
DOC=${DOC:-docs/benchmarks.md}
BUILD=${BUILD:-1}
INSTALL=${INSTALL:-1}
REL=${BIN_DIR:-$ROOT/target/release}
REL=$(cd "$REL" 2>/dev/null && pwd || echo "$REL")
BENCH=$REL/ringway-bench
ORIGIN=$REL/ringway-origin
RINGWAY=$REL/ringway
CLK_TCK=$(getconf CLK_TCK)

# Shards per proxy = number of CPUs in PROXY_CPUS (e.g. "0" or "0-1" or "2,3").
count_cpus() { python3 -c 'import sys
n=0
for p in sys.argv[1].split(","):
    a,_,b=p.partition("-"); n+= (int(b)-int(a)+1) if b else 1
print(n)' "$1"; }
cpu_list() { python3 -c 'import sys
out=[]
for p in sys.argv[1].split(","):
    a,_,b=p.partition("-"); out+= list(range(int(a),int(b)+1)) if b else [int(a)]
print(" ".join(map(str,out)))' "$1"; }
SHARDS=$(count_cpus "$PROXY_CPUS")

log() { printf '[run.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true
ulimit -l unlimited 2>/dev/null || ulimit -l 65536 2>/dev/null || true

# ---------------------------------------------------------------- build and install
if [ "$BUILD" = 1 ] && [ -n "${BIN_DIR:-}" ]; then
  log "BIN_DIR is set: not building (BUILD=1 builds into target/release)"
elif [ "$BUILD" = 1 ]; then
  log "building ringway-bench and ringway-origin (release)"
  cargo build --release -p ringway-bench >&2
  log "building ringway (release)"
  cargo build --release -p ringway >&2 || log "ringway did not build; its rows will say so"
fi
[ -x "$BENCH" ] && [ -x "$ORIGIN" ] || { log "missing $BENCH or $ORIGIN: run with BUILD=1"; exit 1; }

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
need_pkg() { # need_pkg BINARY PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  PATH=$PATH:/usr/sbin command -v "$1" >/dev/null 2>&1 && return 0
  [ "$INSTALL" = 1 ] || return 1
  log "installing $2 with apt-get"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$2" >&2 \
    || { DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -q >&2 \
         && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$2" >&2; } || true
  PATH=$PATH:/usr/sbin command -v "$1" >/dev/null 2>&1
}
export PATH=$PATH:/usr/sbin

# ---------------------------------------------------------------- process CPU accounting
tree_pids() { echo "$1"; local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done; }
# utime+stime (clock ticks) of a process and all its descendants (threads included).
tree_ticks() {
  local t=0 p v
  for p in $(tree_pids "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}') || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

# User+system clock ticks of the whole machine (all CPUs), from /proc/stat (irq and
# softirq time is left out: processes' own utime/stime do not include it either).
machine_busy() { awk '/^cpu / {print $2+$3+$4; exit}' /proc/stat; }

wait_listening() { # wait_listening URL [--http2]: poll until one request succeeds (10 s)
  local url=$1; shift
  local deadline=$((SECONDS + 10))
  while [ $SECONDS -lt $deadline ]; do
    if "$BENCH" -q --json -n 1 -c 1 --timeout 1s "$@" "$url" 2>/dev/null | grep -q '"2xx":1'; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- the origin
start_origin() {
  "$ORIGIN" --listen 127.0.0.1:0 --cpus "$ORIGIN_CPUS" > "$OUT/origin.out" 2> "$OUT/origin.err" &
  ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
  local deadline=$((SECONDS + 10))
  until grep -q 'listening on' "$OUT/origin.out" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "origin did not start: $(cat "$OUT/origin.err")"; exit 1; }
    sleep 0.05
  done
  ORIGIN_ADDR=$(grep -o 'listening on [0-9.:]*' "$OUT/origin.out" | awk '{print $3}')
  log "origin on $ORIGIN_ADDR (CPU $ORIGIN_CPUS), pid $ORIGIN_PID"
}

# The HTTP/2-backend workloads (h2b-*) have an origin of their own: ringway-origin --h2c on
# the same CPUs as the HTTP/1.1 one (which then idles), started only when one is asked for.
H2_ORIGIN_ADDR=""; H2_ORIGIN_PID=""
start_h2_origin() {
  "$ORIGIN" --listen 127.0.0.1:0 --cpus "$ORIGIN_CPUS" --h2c > "$OUT/h2-origin.out" 2> "$OUT/h2-origin.err" &
  H2_ORIGIN_PID=$!; PIDS+=("$H2_ORIGIN_PID")
  local deadline=$((SECONDS + 10))
  until grep -q 'listening on' "$OUT/h2-origin.out" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "h2c origin did not start: $(cat "$OUT/h2-origin.err")"; exit 1; }
    sleep 0.05
  done
  H2_ORIGIN_ADDR=$(grep -o 'listening on [0-9.:]*' "$OUT/h2-origin.out" | awk '{print $3}')
  log "h2c origin on $H2_ORIGIN_ADDR (CPU $ORIGIN_CPUS), pid $H2_ORIGIN_PID"
}
# The h2c origin's own counters (connections accepted, streams served, most streams open
# at once on one connection), as /stats JSON; /stats/reset zeroes them (not the gauge).
h2_origin_stats() { # h2_origin_stats [reset]
  curl -sS --max-time 5 --http2-prior-knowledge "http://$H2_ORIGIN_ADDR/stats${1:+/reset}" 2>/dev/null | tr -d '\n' || true
}

# ---------------------------------------------------------------- the load generator's ceiling
if [ "$MODE" = ceiling ]; then
  ORIGIN_CPUS=${CEIL_ORIGIN_CPUS:-0}; LOAD_CPUS=${CEIL_LOAD_CPUS:-1}
  start_origin
  wait_listening "http://$ORIGIN_ADDR/" || { log "origin does not answer"; exit 1; }
  : > "$OUT/ceiling.txt"
  TIMEFORMAT='%U %S %R'
  for r in $(seq 1 "$ROUNDS"); do
    for tool in ringway-bench wrk h2load; do
      o0=$(tree_ticks "$ORIGIN_PID")
      case $tool in
        ringway-bench) { time "$BENCH" -q --json -c 32 -d "$DUR" -w 0s --cpus "$LOAD_CPUS" "http://$ORIGIN_ADDR/" > "$OUT/ceil.json"; } 2> "$OUT/ceil.time"
          n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["responses_incl_warmup"])' "$OUT/ceil.json") ;;
        wrk) command -v wrk >/dev/null || need_pkg wrk wrk || continue
          { time taskset -c "$LOAD_CPUS" wrk -t1 -c32 -d"$DUR" "http://$ORIGIN_ADDR/" > "$OUT/ceil.wrk"; } 2> "$OUT/ceil.time"
          n=$(awk '/requests in/ {print $1}' "$OUT/ceil.wrk") ;;
        h2load) command -v h2load >/dev/null || need_pkg h2load nghttp2-client || continue
          { time taskset -c "$LOAD_CPUS" h2load --h1 -c32 -D "${DUR%s}" "http://$ORIGIN_ADDR/" > "$OUT/ceil.h2load"; } 2> "$OUT/ceil.time"
          n=$(awk '/^requests:/ {print $6}' "$OUT/ceil.h2load") ;;
      esac
      o1=$(tree_ticks "$ORIGIN_PID")
      read -r u s w < "$OUT/ceil.time"
      python3 - "$tool" "$r" "$n" "$u" "$s" "$w" "$((o1 - o0))" "$CLK_TCK" >> "$OUT/ceiling.txt" <<'PY'
import sys
tool, r, n, u, s, w, oticks, tck = sys.argv[1:]
n=int(n); cpu=float(u)+float(s); w=float(w)
print(f"{tool:14} round {r}: {n/w:9.0f} req/s  client {cpu*1e6/max(n,1):5.1f} CPU-us/req ({cpu/w*100:3.0f}% of its core)  origin {int(oticks)/int(tck)/w*100:3.0f}% of its core")
PY
      tail -1 "$OUT/ceiling.txt" >&2
    done
  done
  exit 0
fi

# ---------------------------------------------------------------- the proxies
P_RINGWAY=$((PORT_BASE + 1)); P_HAPROXY=$((PORT_BASE + 2)); P_HAPROXY_H2=$((PORT_BASE + 3))
P_NGINX=$((PORT_BASE + 4)); P_NGINX_H2=$((PORT_BASE + 5)); P_H2O=$((PORT_BASE + 6))
P_RINGWAY_BEFORE=$((PORT_BASE + 7))
P_RINGWAY_TLS=$((PORT_BASE + 8)); P_HAPROXY_TLS=$((PORT_BASE + 9)); P_NGINX_TLS=$((PORT_BASE + 10))
declare -A URL3

# One certificate for every TLS listener: ECDSA P-256, self-signed (the clients of the TLS
# workloads do not verify; what is measured is the proxies' side of the handshake).
TLS_DIR=$OUT/tls
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" > "$TLS_DIR/combined.pem"
# URL4/URL5: the HTTP/1.1 and h2c fronts whose /h2b/ paths reach the h2c origin (h2b-*).
declare -A PID_OF URL1 URL2 URL4 URL5 NOTE

# The flags both ringway systems run with (ringway and ringway-before: a before/after
# comparison must differ only in the binary). No access log, like the peers here (nginx
# `access_log off`, HAProxy without `log`); a binary that predates the flag has no log.
ringway_common_flags() { # ringway_common_flags HELP_TEXT: prints one flag per line
  if grep -q -- "--access-log" <<<"$1"; then printf '%s\n' --access-log off; fi
  printf '%s\n' --reuse always --log warn
}

start_ringway() {
  if [ ! -x "$RINGWAY" ]; then NOTE[ringway]="not built"; return 1; fi
  local help; help=$("$RINGWAY" --help 2>&1 || true)
  for f in --listen --backend --cpus --reuse; do
    grep -q -- "$f" <<<"$help" || { NOTE[ringway]="binary lacks $f"; return 1; }
  done
  local tls=()
  grep -q -- "--listen-tls" <<<"$help" && tls=(--listen-tls "127.0.0.1:$P_RINGWAY_TLS" \
    --cert "$TLS_DIR/cert.pem" --key "$TLS_DIR/key.pem")
  mapfile -t -O "${#tls[@]}" tls < <(ringway_common_flags "$help")
  # HTTP/2 backend: /h2b/ goes to the h2c origin (which answers any unknown path with
  # its default body), everything else to the HTTP/1.1 one.
  [ -n "$H2_ORIGIN_ADDR" ] && tls+=(--backend "h2b=h2c://$H2_ORIGIN_ADDR" --route "*/h2b=h2b")
  "$RINGWAY" --cpus "$PROXY_CPUS" --listen "127.0.0.1:$P_RINGWAY" --backend "$ORIGIN_ADDR" \
    "${tls[@]}" > "$OUT/ringway.log" 2>&1 &
  PID_OF[ringway]=$!; PIDS+=("$!")
  URL1[ringway]="http://127.0.0.1:$P_RINGWAY"; URL2[ringway]="http://127.0.0.1:$P_RINGWAY"
  grep -q -- "--listen-tls" <<<"$help" && URL3[ringway]="https://127.0.0.1:$P_RINGWAY_TLS"
  if [ -n "$H2_ORIGIN_ADDR" ]; then
    URL4[ringway]="http://127.0.0.1:$P_RINGWAY"; URL5[ringway]="http://127.0.0.1:$P_RINGWAY"
  fi
}

start_ringway-before() {
  local bin=${RINGWAY_BEFORE:-}
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then NOTE[ringway-before]="RINGWAY_BEFORE not set to a binary"; return 1; fi
  local flags; mapfile -t flags < <(ringway_common_flags "$("$bin" --help 2>&1 || true)")
  "$bin" --cpus "$PROXY_CPUS" --listen "127.0.0.1:$P_RINGWAY_BEFORE" --backend "$ORIGIN_ADDR" \
    "${flags[@]}" > "$OUT/ringway-before.log" 2>&1 &
  PID_OF[ringway-before]=$!; PIDS+=("$!")
  URL1[ringway-before]="http://127.0.0.1:$P_RINGWAY_BEFORE"; URL2[ringway-before]="http://127.0.0.1:$P_RINGWAY_BEFORE"
}

start_haproxy() {
  need_pkg haproxy haproxy || { NOTE[haproxy]="not installed"; return 1; }
  local cpumap="" i=1
  for c in $(cpu_list "$PROXY_CPUS"); do cpumap+="    cpu-map 1/$i $c"$'\n'; i=$((i + 1)); done
  cat > "$OUT/haproxy.cfg" <<CFG
global
    nbthread $SHARDS
$cpumap    maxconn 6000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$P_HAPROXY
    bind 127.0.0.1:$P_HAPROXY_H2 proto h2
    bind 127.0.0.1:$P_HAPROXY_TLS ssl crt $TLS_DIR/combined.pem alpn h2,http/1.1
$([ -n "$H2_ORIGIN_ADDR" ] && echo "    use_backend be_h2 if { path_beg /h2b/ }")
    default_backend be
backend be
    server origin $ORIGIN_ADDR
$([ -n "$H2_ORIGIN_ADDR" ] && printf 'backend be_h2\n    server origin_h2 %s proto h2\n' "$H2_ORIGIN_ADDR")
CFG
  haproxy -db -f "$OUT/haproxy.cfg" > "$OUT/haproxy.log" 2>&1 &
  PID_OF[haproxy]=$!; PIDS+=("$!")
  URL1[haproxy]="http://127.0.0.1:$P_HAPROXY"; URL2[haproxy]="http://127.0.0.1:$P_HAPROXY_H2"
  URL3[haproxy]="https://127.0.0.1:$P_HAPROXY_TLS"
  if [ -n "$H2_ORIGIN_ADDR" ]; then
    URL4[haproxy]="http://127.0.0.1:$P_HAPROXY"; URL5[haproxy]="http://127.0.0.1:$P_HAPROXY_H2"
  fi
}

start_nginx() {
  need_pkg nginx nginx || { NOTE[nginx]="not installed"; return 1; }
  local mask="" c
  # worker_cpu_affinity: one bitmask per worker, rightmost bit = CPU 0.
  for c in $(cpu_list "$PROXY_CPUS"); do
    mask+=" $(python3 -c "import sys; print(format(1<<int(sys.argv[1]),'b'))" "$c")"
  done
  mkdir -p "$OUT/nginx"
  cat > "$OUT/nginx/nginx.conf" <<CFG
worker_processes $SHARDS;
worker_cpu_affinity$mask;
daemon off;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $OUT/nginx/body;
    proxy_temp_path $OUT/nginx/proxy;
    fastcgi_temp_path $OUT/nginx/fastcgi;
    uwsgi_temp_path $OUT/nginx/uwsgi;
    scgi_temp_path $OUT/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    http2_max_requests 1000000;
    upstream origin { server $ORIGIN_ADDR; keepalive 256; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$P_NGINX;
        listen 127.0.0.1:$P_NGINX_H2 http2;
        listen 127.0.0.1:$P_NGINX_TLS ssl http2;
        ssl_certificate $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        ssl_session_cache shared:SSL:10m;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
CFG
  nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log" > "$OUT/nginx.log" 2>&1 &
  PID_OF[nginx]=$!; PIDS+=("$!")
  URL1[nginx]="http://127.0.0.1:$P_NGINX"; URL2[nginx]="http://127.0.0.1:$P_NGINX_H2"
  URL3[nginx]="https://127.0.0.1:$P_NGINX_TLS"
}

start_h2o() {
  need_pkg h2o h2o || { NOTE[h2o]="not installed"; return 1; }
  cat > "$OUT/h2o.conf" <<CFG
num-threads: $SHARDS
user: nobody
error-log: $OUT/h2o.err
listen:
  host: 127.0.0.1
  port: $P_H2O
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://$ORIGIN_ADDR/
        proxy.preserve-host: ON
CFG
  # h2o has no CPU map of its own: pin the whole process.
  taskset -c "$PROXY_CPUS" h2o -c "$OUT/h2o.conf" > "$OUT/h2o.log" 2>&1 &
  PID_OF[h2o]=$!; PIDS+=("$!")
  URL1[h2o]="http://127.0.0.1:$P_H2O"; URL2[h2o]="http://127.0.0.1:$P_H2O"
}

start_origin
case " $WORKLOADS " in *" h2b-"*) start_h2_origin ;; esac
URL1[direct]="http://$ORIGIN_ADDR"; URL2[direct]=""
# The h2c origin speaks only HTTP/2: the direct row exists for h2c clients alone.
URL4[direct]=""; URL5[direct]=${H2_ORIGIN_ADDR:+http://$H2_ORIGIN_ADDR}
ACTIVE=()
for s in $SYSTEMS; do
  case $s in
    direct) ACTIVE+=(direct); continue ;;
    ringway|ringway-before|haproxy|nginx|h2o) "start_$s" || { log "$s: ${NOTE[$s]:-failed to start}"; continue; } ;;
    *) log "unknown system $s"; continue ;;
  esac
  if wait_listening "${URL1[$s]}/"; then
    ACTIVE+=("$s"); log "$s up (pid ${PID_OF[$s]}, CPU $PROXY_CPUS)"
  else
    NOTE[$s]="did not answer"; log "$s did not answer; see $OUT/$s*"
  fi
done
# HTTP/2 fronts: probe each, h2c with prior knowledge.
for s in "${ACTIVE[@]}"; do
  [ "$s" = direct ] && continue
  if ! wait_listening "${URL2[$s]}/" --http2; then URL2[$s]=""; log "$s: no h2c front"; fi
done
# HTTP/2 backends: probe /h2b/ on each front that should reach the h2c origin.
if [ -n "$H2_ORIGIN_ADDR" ]; then
  for s in "${ACTIVE[@]}"; do
    case $s in
      nginx) NOTE[nginx-h2b]="nginx cannot proxy to HTTP/2 upstreams (proxy_pass speaks HTTP/1.x; grpc_pass is for gRPC only): no h2b-* rows"
             log "nginx: ${NOTE[nginx-h2b]}"; continue ;;
      h2o) NOTE[h2o-h2b]="h2o $(h2o --version 2>/dev/null | head -1 | awk '{print $3}') proxies to HTTP/1.1 upstreams only: no h2b-* rows"
           log "h2o: ${NOTE[h2o-h2b]}"; continue ;;
    esac
    if [ -n "${URL4[$s]:-}" ] && ! wait_listening "${URL4[$s]}/h2b/"; then URL4[$s]=""; log "$s: its HTTP/1.1 front does not reach the h2c origin"; fi
    if [ -n "${URL5[$s]:-}" ] && ! wait_listening "${URL5[$s]}/h2b/" --http2; then URL5[$s]=""; log "$s: its h2c front does not reach the h2c origin"; fi
  done
fi

# Write the setup for the report.
python3 - "$OUT/setup.json" <<PY
import json, subprocess, sys, platform, os
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception: return ""
notes = {}
$(for s in ringway ringway-before haproxy nginx h2o nginx-h2b h2o-h2b; do echo "notes['$s'] = '''${NOTE[$s]:-}'''"; done)
# How each system was started (its argv), so a report says what ran and a before/after
# pair can be checked to differ only in the binary and port (scripts/bench-smoke.sh).
cmdlines = {}
def argv(pid):
    try: return open(f"/proc/{pid}/cmdline").read().rstrip("\0").split("\0")
    except OSError: return []
$(for s in "${ACTIVE[@]}"; do [ "$s" = direct ] || echo "cmdlines['$s'] = argv(${PID_OF[$s]})"; done)
json.dump({
  "date": sh("date -u +'%Y-%m-%d %H:%M UTC'"),
  "nproc": sh("nproc"),
  "cpu_model": sh("lscpu | sed -n 's/^Model name: *//p' | head -1"),
  "kernel": platform.release(),
  "haproxy": sh("haproxy -v 2>&1 | head -1"),
  "nginx": sh("nginx -v 2>&1"),
  "h2o": sh("h2o --version 2>&1 | head -1"),
  "ringway_commit": sh("git rev-parse --short HEAD"),
  "ringway_built": sh("date -u -r '$RINGWAY' +'%Y-%m-%d %H:%M UTC' 2>/dev/null"),
  "proxy_cpus": "$PROXY_CPUS", "origin_cpus": "$ORIGIN_CPUS", "load_cpus": "$LOAD_CPUS",
  "shards": $SHARDS, "dur": "$DUR", "warmup": "$WARMUP", "rounds": $ROUNDS,
  "quick": "$QUICK", "systems": "$SYSTEMS", "active": "${ACTIVE[*]}",
  "workloads": "$WORKLOADS", "notes": notes, "cmdlines": cmdlines,
  "command": os.environ.get("RUN_CMD", "bench/run.sh"),
}, open(sys.argv[1], "w"), indent=1)
PY

# ---------------------------------------------------------------- the workloads
# workload -> "ringway-bench flags|path|front" (front: 1 = HTTP/1.1 URL, 2 = h2c URL)
declare -A WL=(
  [h1-small]="-c 32|/|1"
  [h1-close]="-c 16 --close|/|1"
  [h1-16k]="-c 32|/size/16384|1"
  [h1-1m]="-c 8|/size/1048576|1"
  [h2-mux]="--http2 -c 4 -m 16|/|2"
  [rate-50]="-c 32|/|1"
  [rate-90]="-c 32|/|1"
  # TLS (front 3): keep-alive requests over TLS with h2load (ALPN http/1.1 and h2), and
  # handshakes per second with openssl s_time (full TLS 1.3; resumed: TLS 1.2 session ids,
  # since s_time takes its session right after the handshake and rustls, unlike OpenSSL,
  # sends TLS 1.3 tickets only after the client's Finished).
  [tls-h1]="h2load --h1 -c 32|/|3"
  [tls-h2]="h2load -c 4 -m 16|/|3"
  [tls-full]="s_time -new|/|3"
  [tls-resume]="s_time -reuse -tls1_2|/|3"
  # HTTP/2 backends (front 4: HTTP/1.1 clients, 5: h2c clients, both to /h2b/, which the
  # proxies route to `ringway-origin --h2c`; ringway `h2c://`, HAProxy `proto h2`): wrk and
  # h2load, each proxy multiplexing its clients' requests onto few backend connections.
  [h2b-h1]="wrk -c 32|/h2b/|4"
  [h2b-h2]="h2load -c 4 -m 16|/h2b/|5"
)
RESULTS=$OUT/results.jsonl
if [ "${RESUME:-0}" = 1 ] && [ -f "$RESULTS" ]; then
  # Keep earlier results of the workloads not rerun now (e.g. rerun only the rate runs).
  python3 - "$RESULTS" $WORKLOADS <<'PY'
import json, sys
path, again = sys.argv[1], set(sys.argv[2:])
keep = [l for l in open(path) if l.strip() and json.loads(l)["workload"] not in again]
open(path, "w").writelines(keep)
PY
else
  : > "$RESULTS"
fi

run_cell() { # run_cell WORKLOAD SYSTEM ROUND URL FLAGS...
  local w=$1 s=$2 r=$3 url=$4; shift 4
  local pid=${PID_OF[$s]:-} p0=0 p1=0 o0 o1 t0 t1
  [ -n "$pid" ] && p0=$(tree_ticks "$pid")
  o0=$(tree_ticks "$ORIGIN_PID"); m0=$(machine_busy); t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$OUT/cell.time" \
    "$BENCH" -q --json --cpus "$LOAD_CPUS" -d "$DUR" -w "$WARMUP" --timeout 5s "$@" "$url" \
    > "$OUT/cell.json" 2> "$OUT/cell.err" || true
  t1=$(date +%s.%N); m1=$(machine_busy); o1=$(tree_ticks "$ORIGIN_PID")
  [ -n "$pid" ] && p1=$(tree_ticks "$pid")
  python3 - "$OUT/cell.json" "$w" "$s" "$r" "$((p1 - p0))" "$((o1 - o0))" "$t0" "$t1" "$CLK_TCK" "$*" \
    "$OUT/cell.err" "$((m1 - m0))" "$OUT/cell.time" >> "$RESULTS" <<'PY'
import json, sys
f, w, s, r, pt, ot, t0, t1, tck, flags, errf, mt, timef = sys.argv[1:]
try:
    rep = json.load(open(f))
except Exception:
    rep = {"failed": open(errf).read()[-500:]}
try:
    load_cpu = sum(float(x) for x in open(timef).read().split()[-2:])
except Exception:
    load_cpu = None
tck = int(tck); wall = float(t1) - float(t0)
ours = int(pt) / tck + int(ot) / tck + (load_cpu or 0)
print(json.dumps({"workload": w, "system": s, "round": int(r), "flags": flags,
                  "proxy_cpu_s": int(pt) / tck, "origin_cpu_s": int(ot) / tck,
                  "load_cpu_s": load_cpu, "machine_busy_s": int(mt) / tck,
                  # CPU used by anything else on the machine during the run (other users).
                  "other_cpu_s": max(0.0, int(mt) / tck - ours),
                  "wall_s": wall, "report": rep}))
PY
  python3 - "$RESULTS" <<'PY' >&2
import json, sys
c = json.loads(open(sys.argv[1]).read().splitlines()[-1]); r = c["report"]
if "failed" in r:
    print(f"  {c['workload']:9} {c['system']:8} round {c['round']}: FAILED {r['failed'][-200:]}")
else:
    n = r.get("responses_incl_warmup") or 0
    cpu = f"{c['proxy_cpu_s']*1e6/n:6.1f} CPU-us/req" if c["system"] != "direct" and n else "      -"
    print(f"  {c['workload']:9} {c['system']:8} round {c['round']}: {r['rps']:9.0f} req/s  p99 {r['latency_us']['p99']:7d}us  {cpu}  errors {r['errors']['total']}")
PY
}

run_cell_tool() { # run_cell_tool WORKLOAD SYSTEM ROUND URL TOOL FLAGS...: h2load or openssl s_time
  local w=$1 s=$2 r=$3 url=$4 tool=$5; shift 5
  local pid=${PID_OF[$s]:-} p0=0 p1=0 o0 o1 t0 t1 secs=${DUR%s} hostport=${url#https://}
  hostport=${hostport%%/*}
  local opid=${CELL_ORIGIN_PID:-$ORIGIN_PID} ostats=""
  case $tool in
    h2load) need_pkg h2load nghttp2-client || { log "h2load missing"; return; } ;;
    wrk) need_pkg wrk wrk || { log "wrk missing"; return; } ;;
    s_time) need_pkg openssl openssl || { log "openssl missing"; return; } ;;
  esac
  # h2b-*: the h2c origin's own count of connections and streams over the run.
  [[ $w == h2b-* ]] && h2_origin_stats reset >/dev/null
  [ -n "$pid" ] && p0=$(tree_ticks "$pid")
  o0=$(tree_ticks "$opid"); m0=$(machine_busy); t0=$(date +%s.%N)
  case $tool in
    wrk) /usr/bin/time -f '%U %S' -o "$OUT/cell.time" taskset -c "$LOAD_CPUS" \
              wrk -t1 "$@" -d "$DUR" --latency "$url" > "$OUT/cell.out" 2> "$OUT/cell.err" || true ;;
    h2load) /usr/bin/time -f '%U %S' -o "$OUT/cell.time" taskset -c "$LOAD_CPUS" \
              h2load "$@" -D "$secs" "$url" > "$OUT/cell.out" 2> "$OUT/cell.err" || true ;;
    s_time) /usr/bin/time -f '%U %S' -o "$OUT/cell.time" taskset -c "$LOAD_CPUS" \
              openssl s_time -connect "$hostport" "$@" -time "$secs" -www / \
              > "$OUT/cell.out" 2> "$OUT/cell.err" || true ;;
  esac
  t1=$(date +%s.%N); m1=$(machine_busy); o1=$(tree_ticks "$opid")
  [ -n "$pid" ] && p1=$(tree_ticks "$pid")
  [[ $w == h2b-* ]] && ostats=$(h2_origin_stats)
  python3 - "$OUT/cell.out" "$w" "$s" "$r" "$((p1 - p0))" "$((o1 - o0))" "$t0" "$t1" "$CLK_TCK" "$tool $*" \
    "$OUT/cell.err" "$((m1 - m0))" "$OUT/cell.time" "$tool" "$ostats" >> "$RESULTS" <<'PY'
import json, re, sys
f, w, s, r, pt, ot, t0, t1, tck, flags, errf, mt, timef, tool, ostats = sys.argv[1:]
text = open(f).read()
tck = int(tck); wall = float(t1) - float(t0)
rep = {"failed": (open(errf).read() + text)[-500:]}
none = {k: None for k in ["p50", "p90", "p99", "p999", "p9999", "max"]}
if tool == "h2load":
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    t = re.search(r"finished in ([\d.]+)s", text)
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    def us(v):
        n = float(re.sub(r"[a-z]+$", "", v)); u = re.sub(r"^[\d.]+", "", v)
        return n * {"us": 1, "ms": 1e3, "s": 1e6}.get(u, 1)
    if m and t and int(m.group(3)) > 0:
        ok = int(m.group(3)); bad = int(m.group(4)) + int(m.group(5)) + int(m.group(6))
        l = dict(none)
        if lat:
            l["p50"] = us(lat.group(3)); l["max"] = us(lat.group(2))
        rep = {"rps": ok / float(t.group(1)), "responses_incl_warmup": ok, "latency_us": l,
               "errors": {"total": bad}}
elif tool == "wrk":
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", text)
    def us(v):
        n = float(re.sub(r"[a-z]+$", "", v)); u = re.sub(r"^[\d.]+", "", v)
        return n * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}.get(u, 1)
    if m and int(m.group(1)) > 0:
        n = int(m.group(1)); secs = float(m.group(2)) * {"ms": 1e-3, "s": 1, "m": 60}[m.group(3)]
        l = dict(none)
        for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
            p = re.search(r"^\s+" + pct + r"%\s+(\S+)", text, re.M)
            if p:
                l[key] = us(p.group(1))
        mx = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", text, re.M)
        if mx:
            l["max"] = us(mx.group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        bad = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
        rep = {"rps": n / secs, "responses_incl_warmup": n, "latency_us": l, "errors": {"total": bad}}
else:
    m = re.search(r"(\d+) connections in [\d.]+ real seconds", text)
    if m and int(m.group(1)) > 0:
        n = int(m.group(1))
        rep = {"rps": n / wall, "responses_incl_warmup": n, "latency_us": dict(none),
               "errors": {"total": 0}}
try:
    load_cpu = sum(float(x) for x in open(timef).read().split()[-2:])
except Exception:
    load_cpu = None
ours = int(pt) / tck + int(ot) / tck + (load_cpu or 0)
cell = {"workload": w, "system": s, "round": int(r), "flags": flags,
        "proxy_cpu_s": int(pt) / tck, "origin_cpu_s": int(ot) / tck,
        "load_cpu_s": load_cpu, "machine_busy_s": int(mt) / tck,
        "other_cpu_s": max(0.0, int(mt) / tck - ours),
        "wall_s": wall, "report": rep}
try:
    o = json.loads(ostats)
    # The h2c origin's own count since the reset before the run, less the /stats query's
    # own connection and stream: connections opened (a proxy reuses what it had pooled),
    # streams served, and the most streams open at once on one connection.
    cell["origin_new_conns"] = max(0, o["connections_total"] - 1)
    cell["origin_streams"] = max(0, o["requests_total"] - 1)
    cell["origin_peak_streams"] = o["max_open_per_conn"]
except (ValueError, KeyError):
    pass
print(json.dumps(cell))
PY
  python3 - "$RESULTS" <<'PY' >&2
import json, sys
c = json.loads(open(sys.argv[1]).read().splitlines()[-1]); r = c["report"]
if "failed" in r:
    print(f"  {c['workload']:9} {c['system']:8} round {c['round']}: FAILED {r['failed'][-200:]}")
else:
    n = r.get("responses_incl_warmup") or 0
    conns = f"  origin: {c['origin_new_conns']} new conns, {c['origin_streams']} streams, up to {c['origin_peak_streams']} at once on one" if "origin_new_conns" in c else ""
    print(f"  {c['workload']:9} {c['system']:8} round {c['round']}: {r['rps']:9.0f} /s  {c['proxy_cpu_s']*1e6/max(n,1):7.1f} CPU-us each  errors {r['errors']['total']}{conns}")
PY
}

rate_for() { # rate_for FRACTION: FRACTION x the lowest proxy peak (median) on h1-small
  python3 - "$RESULTS" "$1" <<'PY'
import json, sys, statistics
peaks = {}
for line in open(sys.argv[1]):
    c = json.loads(line)
    if c["workload"] == "h1-small" and c["system"] != "direct" and "rps" in c["report"]:
        peaks.setdefault(c["system"], []).append(c["report"]["rps"])
meds = [statistics.median(v) for v in peaks.values()]
print(int(float(sys.argv[2]) * min(meds)) if meds else 0)
PY
}

for w in $WORKLOADS; do
  [ -n "${WL[$w]:-}" ] || { log "unknown workload $w"; continue; }
  IFS='|' read -r flags path front <<<"${WL[$w]}"
  extra=()
  case $w in
    rate-50) rate=$(rate_for 0.5) ;;
    rate-90) rate=$(rate_for 0.9) ;;
    *) rate="" ;;
  esac
  if [[ $w == rate-* ]]; then
    [ "$rate" -gt 0 ] 2>/dev/null || { log "$w: no h1-small peak measured; skipped"; continue; }
    extra=(--rate "$rate"); log "$w: open loop at $rate req/s for every system"
  fi
  log "workload $w ($flags ${extra[*]} $path)"
  for r in $(seq 1 "$ROUNDS"); do
    for s in "${ACTIVE[@]}"; do
      case $front in
        2) base=${URL2[$s]:-} ;;
        3) base=${URL3[$s]:-} ;;
        4) base=${URL4[$s]:-} ;;
        5) base=${URL5[$s]:-} ;;
        *) base=${URL1[$s]} ;;
      esac
      [ -n "$base" ] || continue
      case $front in 4|5) CELL_ORIGIN_PID=$H2_ORIGIN_PID ;; *) CELL_ORIGIN_PID=$ORIGIN_PID ;; esac
      if [ "$front" -ge 3 ]; then
        # shellcheck disable=SC2086
        run_cell_tool "$w" "$s" "$r" "$base$path" $flags
        continue
      fi
      # shellcheck disable=SC2086
      run_cell "$w" "$s" "$r" "$base$path" $flags "${extra[@]}"
    done
  done
done

# The two columns the per-workload runs cannot give: system calls per keep-alive request
# (strace, a separate short run: tracing slows every call) and memory per idle connection.
# EXTRAS=0 skips them; SYSCALLS_N and IDLE_NS size them.
if [ "${EXTRAS:-1}" = 1 ]; then
  log "system calls per request (bench/syscalls.sh)"
  BIN_DIR=$REL RINGWAY=$RINGWAY JSON="$OUT/syscalls.jsonl" N="${SYSCALLS_N:-50000}" ROUNDS="$ROUNDS" \
    PROXY_CPU="${PROXY_CPUS%%[-,]*}" LOAD_CPU="${LOAD_CPUS%%[-,]*}" PORT=$((PORT_BASE + 1800)) \
    bench/syscalls.sh > "$OUT/syscalls.md" 2> "$OUT/syscalls.err" || log "syscalls run failed: $(tail -3 "$OUT/syscalls.err")"
  log "memory per idle connection (bench/idle.sh)"
  BIN_DIR=$REL RINGWAY=$RINGWAY NS="${IDLE_NS:-5000 10000}" PORT=$((PORT_BASE + 1600)) ADMIN=$((PORT_BASE + 1700)) \
    bench/idle.sh > "$OUT/idle.md" 2> "$OUT/idle.err" || log "idle run failed: $(tail -3 "$OUT/idle.err")"
fi

python3 bench/harness/report.py "$OUT" --doc "$DOC" --png "${PNG:-$(dirname "$DOC")/benchmarks-latency.png}"
log "raw results in $OUT/results.jsonl"
