#!/usr/bin/env bash
# Interoperability checks: the ringway binary between real clients (curl, wrk, our own
# ringway-bench) and ringway-origin, over loopback. Every load is bounded in time.
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
echo "$metrics" | grep -q '^ringway_requests_total{shard="all"} [1-9]' || fail "/metrics totals"
ok "/metrics totals"

# h2c with prior knowledge on the same listener: h2load, every stream answered 2xx.
if command -v h2load >/dev/null; then
  h2load -n 2000 -c 4 -m 16 "http://$proxy/" >"$work/h2load.out" 2>&1 || fail "h2load failed: $(cat "$work/h2load.out")"
  grep -q "2000 succeeded, 0 failed" "$work/h2load.out" || { cat "$work/h2load.out"; fail "h2load saw failures"; }
  ok "h2load -n 2000 -c 4 -m 16 (h2c): 2000 succeeded, 0 failed"
  h2sum=$(nghttp "http://$proxy/size/1048576" | sha256sum | cut -d' ' -f1)
  [ "$h2sum" = "$(curl -sS "http://$origin/size/1048576" | sha256sum | cut -d' ' -f1)" ] || fail "nghttp 1 MiB download differs"
  ok "nghttp 1 MiB download over h2c, same digest as the origin direct"
fi

# SIGTERM: drains and exits 0.
kill -TERM "$proxy_pid"
for _ in $(seq 1 100); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
rc=0; wait "$proxy_pid" || rc=$?
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM"
ok "SIGTERM exits 0"
! grep -q panicked "$work/proxy.err" || fail "the proxy panicked: $(cat "$work/proxy.err")"

echo "interop: $passed passed, 0 failed"
