#!/usr/bin/env bash
# Soak: a release siphook under steady load for a long time, against an endpoint
# that answers 1 webhook in 10 with 503 (siphook retries them on its schedule).
# Samples every INTERVAL seconds: RSS, the outbox's size on disk (du and
# siphook_outbox_size_bytes), pending deliveries, dead letters, the outbox log's
# segments and the bytes carried forward out of old segments; then the bench's
# own verdict (zero loss, no duplicates, signatures, order).
#
#   benches/soak.sh [DURATION_S] [RATE] [OUT_DIR]   (defaults: 3600 500 target/soak)
#
# Writes OUT_DIR/samples.csv, OUT_DIR/bench.txt, OUT_DIR/bench.json and
# OUT_DIR/soak.svg (RSS and outbox size over time). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-3600}
RATE=${2:-500}
OUT=${3:-target/soak}
INTERVAL=${SOAK_INTERVAL:-30}
mkdir -p "$OUT"

. benches/lib.sh
work=$(mktemp -d)
trap 'kill "${pid:-0}" "${sampler:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

SIP=$(port); RECV=$(port); ADMIN=$(port)
cat >"$work/siphook.toml" <<EOF
[sip]
udp = ["127.0.0.1:$SIP"]
tcp = []
[outbox]
path = "$work/outbox"
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
level = "warn"
[[endpoints]]
name = "bench"
url = "http://127.0.0.1:$RECV/hook"
allow_http = true
secrets = ["$SECRET"]
# Shorter than the default (0s 5s 5m 30m 2h 5h 10h 10h) so that a webhook refused
# several times in a row still arrives within the drain; eight refusals in a row
# (about 1 in 10^8 here) would make a dead letter.
retry_schedule = ["0s", "1s", "2s", "5s", "10s", "30s", "60s", "120s"]
EOF

start_siphook "$work/siphook.toml" "$ADMIN" "$OUT/siphook.log"

metric() { awk -v m="$1" '$1 == m || index($1, m"{") == 1 {print $2; exit}' "$work/metrics"; }
sample() {
  curl -fs "http://127.0.0.1:$ADMIN/metrics" >"$work/metrics" 2>/dev/null || : >"$work/metrics"
  printf '%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$(( $(date +%s) - start ))" \
    "$(awk '/^VmRSS/ {print $2 * 1024}' "/proc/$pid/status")" \
    "$(du -sb "$work/outbox" 2>/dev/null | cut -f1 || true)" \
    "$(metric siphook_outbox_size_bytes)" \
    "$(metric siphook_outbox_pending)" \
    "$(metric siphook_deadletters)" \
    "$(metric siphook_calls_active)" \
    "$(metric siphook_outbox_segments)" \
    "$(metric siphook_outbox_carried_bytes_total)"
}
start=$(date +%s)
echo "seconds,rss_bytes,outbox_du_bytes,outbox_size_bytes,pending,deadletters,calls_active,segments,carried_bytes" >"$OUT/samples.csv"
(
  # Bounded: the run, its drain and a margin.
  for _ in $(seq 0 $(( (DURATION + 360) / INTERVAL ))); do
    sample >>"$OUT/samples.csv"
    sleep "$INTERVAL"
  done
) &
sampler=$!

status=0
"$BIN" bench --target "127.0.0.1:$SIP" --receiver "127.0.0.1:$RECV" --secret "$SECRET" \
  --rate "$RATE" --duration "${DURATION}s" --fail-every 10 --drain-deadline 300s \
  --json "$OUT/bench.json" --plot "$OUT/latency.svg" >"$OUT/bench.txt" || status=$?
kill "$sampler" 2>/dev/null || true
sample >>"$OUT/samples.csv"
cat "$OUT/bench.txt"
python3 benches/soak_plot.py "$OUT/samples.csv" "$OUT/soak.svg"
echo "samples: $OUT/samples.csv, plot: $OUT/soak.svg"
exit "$status"
