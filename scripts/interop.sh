#!/usr/bin/env bash
# Interoperability checks: the ringway binary between real clients (curl, wrk, nghttp,
# h2load, our own ringway-bench) and origins (ringway-origin in HTTP/1.1 and h2c mode,
# nginx over h2c), over loopback. Every load is bounded in time.
# Usage: scripts/interop.sh [BIN_DIR]   (default target/debug)
set -euo pipefail
bin=${1:-target/debug}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }

wait_line() { # file pattern -> prints the first matching line, within 10 s
  for _ in $(seq 1 200); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1"; return 0; fi
    sleep 0.05
  done
  return 1
}

"$bin/ringway-origin" --listen 127.0.0.1:0 >"$work/origin.out" 2>&1 & pids+=($!)
origin=$(wait_line "$work/origin.out" "listening on" | awk '{print $3}') || fail "origin did not start"
"$bin/ringway" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --backend "$origin" --shards 2 \
  >"$work/proxy.out" 2>"$work/proxy.err" & proxy_pid=$!; pids+=($proxy_pid)
proxy=$(wait_line "$work/proxy.out" "listening on" | awk '{print $3}') || { cat "$work/proxy.err"; fail "proxy did not start"; }
admin=$(wait_line "$work/proxy.out" "admin on" | awk '{print $3}')
echo "origin $origin, proxy $proxy, admin $admin"

# curl: plain GET, HEAD, HTTP/1.0, POST with Expect: 100-continue, chunked upload, big body.
[ "$(curl -sS "http://$proxy/")" = "hello, world" ] || fail "curl GET"; ok "curl GET"
[ "$(curl -sS -I "http://$proxy/" -o /dev/null -w '%{http_code}')" = 200 ] || fail "curl HEAD"; ok "curl HEAD"
[ "$(curl -sS -0 "http://$proxy/chunked/1000" | wc -c)" = 1000 ] || fail "curl HTTP/1.0 gets a de-chunked body"; ok "curl HTTP/1.0 gets a de-chunked body"
head -c 300000 /dev/urandom >"$work/body"
start=$(date +%s%N)
curl -sS --data-binary @"$work/body" "http://$proxy/echo" -o "$work/echoed"
took=$(( ($(date +%s%N) - start) / 1000000 ))
cmp -s "$work/body" "$work/echoed" || fail "POST /echo body differs"
[ "$took" -lt 900 ] || fail "POST with Expect: 100-continue took ${took} ms (waited for curl's expect timeout?)"
ok "curl POST with Expect: 100-continue (${took} ms)"
curl -sS -H 'Transfer-Encoding: chunked' --data-binary @"$work/body" "http://$proxy/echo" -o "$work/echoed2"
cmp -s "$work/body" "$work/echoed2" || fail "curl chunked upload differs"; ok "curl chunked upload"
sum_a=$(curl -sS "http://$proxy/size/33554432" | sha256sum | cut -d' ' -f1)
sum_b=$(curl -sS "http://$origin/size/33554432" | sha256sum | cut -d' ' -f1)
[ "$sum_a" = "$sum_b" ] || fail "curl 32 MiB download, same digest as the origin direct"; ok "curl 32 MiB download, same digest as the origin direct"
[ "$(curl -sS "http://$proxy/status/503" -o /dev/null -w '%{http_code}')" = 503 ] || fail "backend status passed through"; ok "backend status passed through"
[ "$(printf 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n' | curl -sS --max-time 5 telnet://$proxy 2>/dev/null | head -1 | tr -d '\r')" = "HTTP/1.1 400 Bad Request" ] || fail "smuggling attempt (CL+TE) refused with 400"; ok "smuggling attempt (CL+TE) refused with 400"

# wrk: keep-alive load, no errors, and the backend connection count stays small.
if command -v wrk >/dev/null; then
  curl -sS "http://$origin/stats/reset" >/dev/null
  wrk -t1 -c32 -d3s "http://$proxy/" >"$work/wrk.out" 2>&1 || fail "wrk failed: $(cat "$work/wrk.out")"
  grep -q "Non-2xx\|Socket errors" "$work/wrk.out" && { cat "$work/wrk.out"; fail "wrk saw errors"; }
  reqs=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  conns=$(curl -sS "http://$origin/stats" | sed -E 's/.*"connections_total":([0-9]+).*/\1/')
  [ "$reqs" -gt 1000 ] || fail "wrk made only $reqs requests"
  [ "$conns" -le 64 ] || fail "$conns backend connections for $reqs requests"
  ok "wrk -c32: $reqs requests, $conns backend connections, no errors"
fi

# ringway-bench: every request answered, and the origin counted exactly as many.
curl -sS "http://$origin/stats/reset" >/dev/null
"$bin/ringway-bench" "http://$proxy/" -c 8 -n 2000 --json >"$work/bench.json" 2>/dev/null || fail "ringway-bench failed"
got=$(curl -sS "http://$origin/stats" | sed -E 's/.*"requests_total":([0-9]+).*/\1/')
[ "$got" -eq 2001 ] || fail "origin counted $got requests, expected 2001"
ok "ringway-bench -n 2000: origin counted $got requests (2000 + this /stats)"

# /metrics: both shards served, and it is valid Prometheus text.
metrics=$(curl -sS "http://$admin/metrics")
# Totals are what sum() over the per-shard series gives (there is no shard="all" series).
total=$(echo "$metrics" | awk '/^ringway_requests_total\{shard="[0-9]+"/ {s += $NF} END {print s + 0}')
[ "${total%.*}" -gt 0 ] || fail "/metrics totals: no requests counted"
! echo "$metrics" | grep -q 'shard="all"' || fail "/metrics has a synthetic shard=\"all\" series"
ok "/metrics totals ($total requests over the shards)"

# h2c with prior knowledge on the same listener: h2load, every stream answered 2xx.
if command -v h2load >/dev/null; then
  h2load -n 2000 -c 4 -m 16 "http://$proxy/" >"$work/h2load.out" 2>&1 || fail "h2load failed: $(cat "$work/h2load.out")"
  grep -q "2000 succeeded, 0 failed" "$work/h2load.out" || { cat "$work/h2load.out"; fail "h2load saw failures"; }
  ok "h2load -n 2000 -c 4 -m 16 (h2c): 2000 succeeded, 0 failed"
  h2sum=$(nghttp "http://$proxy/size/1048576" | sha256sum | cut -d' ' -f1)
  [ "$h2sum" = "$(curl -sS "http://$origin/size/1048576" | sha256sum | cut -d' ' -f1)" ] || fail "nghttp 1 MiB download differs"
  ok "nghttp 1 MiB download over h2c, same digest as the origin direct"
fi

# HTTP/2 backends (h2c://): HTTP/1.1 and HTTP/2 clients (curl, curl --http2-prior-knowledge,
# nghttp, h2load) through ringway to two h2c origins, nginx (`listen ... http2`, not ours)
# and ringway-origin --h2c; 400 concurrent client streams must share a handful of backend
# connections, by each origin's own count. These tools are required (.ci/run installs
# them): a missing one fails the run instead of skipping the check.
for tool in curl nghttp h2load nginx; do
  command -v "$tool" >/dev/null || fail "$tool is needed for the h2c backend checks (installed by .ci/run)"
done
h2load_ok() { # h2load_ok OUTFILE N ARGS...: h2load, then exactly N succeeded and 0 failed
  local out=$1 n=$2; shift 2
  h2load "$@" >"$out" 2>&1 || fail "h2load $* failed: $(cat "$out")"
  grep -q "$n succeeded, 0 failed, 0 errored, 0 timeout" "$out" || { cat "$out"; fail "h2load $* saw failures"; }
}
tokens_echoed() { # tokens_echoed URL [CURL ARGS...]: 100 concurrent POSTs, each answered with its own body
  local url=$1; shift
  local bad
  bad=$(seq 1 100 | xargs -P 20 -I{} sh -c 'b="tok-{}-$$"; r=$(curl -sS --max-time 10 "$@" --data-binary "$b" "$0") || echo "curl failed {}"; [ "$r" = "$b" ] || echo "stream {} got [$r]"' "$url" "$@")
  [ -z "$bad" ] || fail "answers that do not carry their own request's body: $bad"
}

port=$((20000 + RANDOM % 20000))
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn; events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port http2; location = /nginx_status { stub_status; }
    location / { default_type text/plain; return 200 "tok=\$arg_t\n"; } } }
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" & pids+=($!)
for _ in $(seq 1 100); do curl -sS --http2-prior-knowledge "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
"$bin/ringway" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --backend "h2c://127.0.0.1:$port" --shards 1 \
  >"$work/proxy2.out" 2>"$work/proxy2.err" & pids+=($!)
proxy2=$(wait_line "$work/proxy2.out" "listening on" | awk '{print $3}') || { cat "$work/proxy2.err"; fail "h2c proxy did not start"; }
accepts() { curl -sS --http2-prior-knowledge "http://127.0.0.1:$port/nginx_status" | awk 'NR==3 {print $1}'; }
before=$(accepts)
[ "$(curl -sS "http://$proxy2/?t=1")" = "tok=1" ] || fail "curl HTTP/1.1 to an h2c backend"; ok "curl HTTP/1.1 client to an h2c backend (nginx)"
[ "$(curl -sS --http2-prior-knowledge "http://$proxy2/?t=2")" = "tok=2" ] || fail "curl h2c to an h2c backend"; ok "curl --http2-prior-knowledge to an h2c backend (nginx)"
[ "$(nghttp "http://$proxy2/?t=3")" = "tok=3" ] || fail "nghttp to an h2c backend"; ok "nghttp to an h2c backend (nginx)"
h2load_ok "$work/h2load2.out" 20000 -n 20000 -c 20 -m 20 "http://$proxy2/"
h2load_ok "$work/h2load2h1.out" 5000 --h1 -n 5000 -c 50 "http://$proxy2/"
conns=$(( $(accepts) - before - 1 ))
[ "$conns" -ge 1 ] && [ "$conns" -le 12 ] || fail "$conns nginx connections for 400 concurrent streams"
ok "h2load -n 20000 -c 20 -m 20 and --h1 -c 50 to an h2c backend (nginx): 0 failed, $conns nginx connections"

"$bin/ringway-origin" --listen 127.0.0.1:0 --h2c --max-concurrent-streams 100 >"$work/h2origin.out" 2>&1 & pids+=($!)
h2origin=$(wait_line "$work/h2origin.out" "listening on" | awk '{print $3}') || fail "ringway-origin --h2c did not start"
"$bin/ringway" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --backend "h2c://$h2origin" --shards 1 \
  >"$work/proxy3.out" 2>"$work/proxy3.err" & pids+=($!)
proxy3=$(wait_line "$work/proxy3.out" "listening on" | awk '{print $3}') || { cat "$work/proxy3.err"; fail "h2c proxy (ringway-origin) did not start"; }
ostat() { curl -sS --http2-prior-knowledge "http://$h2origin/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
# First, on a fresh proxy and origin: every backend connection is counted. Each stream
# takes 1 ms at the origin (/delay/1), so the client's 400 concurrent streams overlap there.
h2load_ok "$work/h2load3.out" 20000 -n 20000 -c 20 -m 20 "http://$proxy3/delay/1"
# The /stats queries are counted too: one connection and one stream each.
conns=$(( $(ostat connections_total) - 1 ))
streams=$(( $(ostat requests_total) - 2 ))
peak=$(ostat max_open_per_conn)
[ "$streams" -ge 20000 ] || fail "ringway-origin served $streams streams for 20000 requests"
[ "$conns" -ge 1 ] && [ "$conns" -le 12 ] || fail "$conns ringway-origin connections for 400 concurrent streams"
[ "$peak" -ge 20 ] && [ "$peak" -le 100 ] || fail "at most $peak streams open at once on one backend connection (want 20..100: multiplexed, within SETTINGS_MAX_CONCURRENT_STREAMS 100)"
ok "h2load -n 20000 -c 20 -m 20 to an h2c backend (ringway-origin): 0 failed, $conns backend connections, up to $peak streams at once on one"
h2load_ok "$work/h2load3h1.out" 5000 --h1 -n 5000 -c 50 "http://$proxy3/"
conns=$(( $(ostat connections_total) - 4 ))
[ "$conns" -le 12 ] || fail "$conns ringway-origin connections after 50 HTTP/1.1 clients"
ok "h2load --h1 -c 50 to an h2c backend (ringway-origin): 0 failed, HTTP/1.1 clients share the same $conns connections"
tokens_echoed "http://$proxy3/echo"; ok "100 concurrent HTTP/1.1 POSTs through an h2c backend each get their own body back"
tokens_echoed "http://$proxy3/echo" --http2-prior-knowledge; ok "100 concurrent h2c POSTs through an h2c backend each get their own body back"
sum_a=$(nghttp "http://$proxy3/size/1048576" | sha256sum | cut -d' ' -f1)
sum_b=$(curl -sS --http2-prior-knowledge "http://$h2origin/size/1048576" | sha256sum | cut -d' ' -f1)
[ "$sum_a" = "$sum_b" ] || fail "nghttp 1 MiB through an h2c backend differs"
ok "nghttp 1 MiB through an h2c backend (ringway-origin), same digest as the origin direct"
curl -sS --data-binary @"$work/body" "http://$proxy3/echo" -o "$work/echoed3"
cmp -s "$work/body" "$work/echoed3" || fail "curl 300 KB echo through an h2c backend differs"
ok "curl HTTP/1.1 300 KB POST /echo through an h2c backend"
! grep -q panicked "$work/proxy2.err" "$work/proxy3.err" || fail "an h2c proxy panicked: $(cat "$work/proxy2.err" "$work/proxy3.err")"

# SIGTERM: drains and exits 0.
kill -TERM "$proxy_pid"
for _ in $(seq 1 100); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
rc=0; wait "$proxy_pid" || rc=$?
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM"
ok "SIGTERM exits 0"
! grep -q panicked "$work/proxy.err" || fail "the proxy panicked: $(cat "$work/proxy.err")"

echo "interop: $passed passed, 0 failed"
