#!/usr/bin/env bash
# The end-to-end numbers of BENCHMARKS.md in one command: SIP-to-webhook latency
# against the null relay at 100 and 1,000 calls/s, the mixed profile, the highest
# sustainable rate with the durable outbox and with commits that skip the fsync,
# and the plots. Loopback only; each run is bounded (--duration, --drain-deadline).
#
#   benches/e2e.sh [OUT_DIR]        (default target/e2e; RATES="2000 2500 3000" to change the ladder)
#
# Writes OUT_DIR/<name>.txt (the table), .json (everything) and .svg (the plot).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/e2e}
mkdir -p "$OUT"
BIN=target/release/siphook
[ -x "$BIN" ] || cargo build --release --locked
DURATION=${DURATION:-20s}

run() {
  local name=$1
  shift
  echo "== $name: siphook bench --spawn $*"
  "$BIN" bench --spawn --duration "$DURATION" --drain-deadline 30s \
    --json "$OUT/$name.json" --plot "$OUT/$name.svg" "$@" >"$OUT/$name.txt" 2>&1
  grep -E "latency p50|latency p99 \(|lost  |PASSED|FAILED" "$OUT/$name.txt"
}

run answered-100 --rate 100 --baseline
run answered-1000 --rate 1000 --baseline
run answered-1000-nofsync --rate 1000 --no-fsync
run mixed-1000 --rate 1000 --profile mixed --baseline
for r in ${RATES:-2000 3000 5000}; do
  run "answered-$r" --rate "$r"
  run "answered-$r-nofsync" --rate "$r" --no-fsync
done
