#!/usr/bin/env bash
# Process memory with many calls up at once: starts a release siphook on loopback,
# holds CALLS answered calls open (siphook bench --hold), and reads the process's
# RSS when they are all active, against its RSS before the first call.
#
#   benches/active_calls.sh [CALLS] [RATE]     (defaults: 100000 calls at 2000/s)
#
# Prints RSS idle, RSS at the peak, calls active (siphook_calls_active) and bytes
# per call. The call table's own heap per call is `cargo bench --bench call_memory`;
# this one also counts the allocator's slack, sled's page cache and the dispatcher.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS=${1:-100000}
RATE=${2:-2000}
# All calls start in CALLS/RATE seconds; each is held long enough that the first
# is still up when the last starts, plus a margin for the measurement.
START_S=$(( (CALLS + RATE - 1) / RATE ))
HOLD_S=$(( START_S + 30 ))

. benches/lib.sh
work=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

SIP=$(port); RECV=$(port); ADMIN=$(port)
cat >"$work/siphook.toml" <<EOF
[sip]
udp = ["127.0.0.1:$SIP"]
tcp = []
max_active_calls = $(( CALLS * 2 ))
max_call_duration = "1h"
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
EOF

start_siphook "$work/siphook.toml" "$ADMIN"
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$pid/status"; }
active() { curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk '/^siphook_calls_active / {print $2}'; }
idle=$(rss)

"$BIN" bench --target "127.0.0.1:$SIP" --receiver "127.0.0.1:$RECV" --secret "$SECRET" \
  --calls "$CALLS" --rate "$RATE" --hold "${HOLD_S}s" --drain-deadline 30s >"$work/bench.txt" &
bench=$!

# Every call has started after START_S seconds and is held HOLD_S, so a few
# seconds later they are all up at once: sample then (bounded polling, no wait on
# the count itself, which loss would keep from ever being reached).
for _ in $(seq 1 $(( (START_S + 5) * 2 ))); do
  kill -0 "$bench" 2>/dev/null || break
  sleep 0.5
done
at_peak=$(rss); up=$(active || echo 0)
wait "$bench" || true
after=$(rss)

echo "calls active when sampled: $up of $CALLS"
echo "RSS idle: $(( idle / 1024 )) KiB; with all calls up: $(( at_peak / 1024 )) KiB; after they ended: $(( after / 1024 )) KiB"
awk -v a="$at_peak" -v i="$idle" -v n="${up%.*}" 'BEGIN { if (n > 0) printf "bytes per active call (RSS delta / calls): %.0f\n", (a - i) / n }'
grep -E "PASSED|FAILED|lost" "$work/bench.txt" | head -3
