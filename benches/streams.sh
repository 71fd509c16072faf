#!/usr/bin/env bash
# Webhooks, NATS JetStream and Kafka (librdkafka's mock cluster) on the same
# answered-call load, interleaved per rate: BENCHMARKS.md "Webhooks, NATS
# JetStream and Kafka on the same machine". Needs a nats-server with JetStream on
# NATS_URL (default nats://127.0.0.1:4333, e.g.
# `nats-server -a 127.0.0.1 -p 4333 -js -sd /tmp/nats-bench &`).
#
#   [SIPHOOK_BIN=target/release/siphook] [REPS="1 2"] benches/streams.sh [OUT_DIR] RATE...
set -u
bin=${SIPHOOK_BIN:-target/release/siphook}
out=${1:-target/streams}
shift || true
[ $# -gt 0 ] || set -- 1000 2000 3000 4000 5000
mkdir -p "$out"
for rep in ${REPS:-1}; do
  for rate in "$@"; do
    for sink in webhook nats kafka; do
      case $sink in
        webhook) extra=() ;;
        nats) extra=(--nats "${NATS_URL:-nats://127.0.0.1:4333}") ;;
        kafka) extra=(--kafka mock) ;;
      esac
      /usr/bin/time -f "%U %S" -o "$out/cpu-$sink-$rate-$rep" \
        "$bin" bench --spawn --rate "$rate" --duration 20s "${extra[@]}" \
        --json "$out/$sink-$rate-$rep.json" >"$out/$sink-$rate-$rep.txt" 2>&1 || true
    done
  done
done
python3 - "$out" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
    s = json.load(open(f))["siphook"]
    q = s.get("latency_ms") or {}
    print(f.split("/")[-1][:-5], "received", s["received"], "of", s["expected"], "lost", s["lost"],
          "dup", s["duplicates"], "p50", round(q.get("p50", 0), 2), "p99", round(q.get("p99", 0), 2),
          "siphook cores", round(s["cpu"]["tap"], 3))
PY
