#!/usr/bin/env bash
# scripts/bench-smoke.sh BIN_DIR — the benchmark harness runs, end to end, in a few seconds:
# one short round of bench/run.sh (h1-small) through ringway and through a second ringway
# as `ringway-before`, with the binaries of BIN_DIR (CI: the debug build; the figures mean
# nothing, the run and its report do). Checks that
#   - every system answered and each cell has requests and a CPU figure;
#   - ringway and ringway-before were started with the same arguments but for the binary and
#     the port: a before/after comparison measures the binary alone. (Until 2026-12-03 the
#     harness started ringway-before without `--access-log off`, so every before/after
#     finding counted the old build's access log against it.)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${1:-target/debug}" && pwd)
T=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
WORKLOADS=h1-small ROUNDS=1 DUR=1s WARMUP=0.2s BUILD=0 INSTALL=0 EXTRAS=0 \
  SYSTEMS="ringway ringway-before" RINGWAY_BEFORE="$BIN/ringway" BIN_DIR="$BIN" \
  PORT_BASE=${PORT_BASE:-18380} OUT="$T/run" DOC="$T/benchmarks.md" \
  bash bench/run.sh > "$T/stdout" 2> "$T/stderr" || {
  echo "bench/run.sh failed:"; tail -30 "$T/stderr"; exit 1
}
python3 - "$T" <<'PY'
import json, sys
out = sys.argv[1]
setup = json.load(open(f"{out}/run/setup.json"))
active = setup["active"].split()
assert active == ["ringway", "ringway-before"], f"systems that came up: {active}"
cmd = setup["cmdlines"]
# Each system has its own binary and ports; ringway also serves the TLS workloads,
# which ringway-before does not. The rest must be the same.
OWN = {"--listen", "--listen-tls", "--cert", "--key"}
def shared(argv):
    rest, skip = [], False
    for x in argv[1:]:
        if skip:
            skip = False
        elif x in OWN:
            skip = True
        else:
            rest.append(x)
    return rest
a, b = shared(cmd["ringway"]), shared(cmd["ringway-before"])
assert a == b, f"ringway and ringway-before differ:\n  {a}\n  {b}"
assert "--access-log" in a, f"ringway ran with its access log: {a}"
cells = [json.loads(l) for l in open(f"{out}/run/results.jsonl")]
for s in active:
    got = [c for c in cells if c["system"] == s and c["workload"] == "h1-small"]
    assert got, f"no h1-small cell for {s}"
    for c in got:
        assert c.get("report", {}).get("requests", 0) > 0, f"{s}: no requests: {c}"
        assert c.get("proxy_cpu_s", 0) > 0, f"{s}: no CPU figure: {c}"
doc = open(f"{out}/benchmarks.md").read()
assert "ringway-before" in doc, "the report lacks the ringway-before row"
print(f"bench smoke: {len(cells)} cells, ringway and ringway-before started alike: {' '.join(a)}")
PY
