#!/usr/bin/env bash
# What a broker outage costs on disk: siphook with a nats:// endpoint no server
# listens on, CALLS answered calls from the bench generator at 2,000/s, then the
# outbox's pending count and segments: BENCHMARKS.md "Broker outage: what the
# outbox holds". Everything on 127.0.0.1 (ports 15060, 19960, 19961).
#
#   [SIPHOOK_BIN=target/release/siphook] benches/outage.sh [CALLS]
set -u
bin=${SIPHOOK_BIN:-target/release/siphook}
calls=${1:-50000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/siphook.toml" <<TOML
[sip]
udp = ["127.0.0.1:15060"]
tcp = []
[outbox]
path = "$dir/outbox"
[admin]
listen = "127.0.0.1:19960"
[log]
level = "warn"
[[endpoints]]
name = "stream"
url = "nats://127.0.0.1:1"
subject = "siphook.{type}"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
TOML
"$bin" run --config "$dir/siphook.toml" >/dev/null 2>"$dir/log" &
pid=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:19960/healthz >/dev/null && break; sleep 0.1; done
# The bench's receiver gets nothing (the endpoint is NATS): it reports every
# event as lost, which is the point.
"$bin" bench --target 127.0.0.1:15060 --receiver 127.0.0.1:19961 \
  --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --rate 2000 --calls "$calls" \
  --drain-deadline 1s >"$dir/bench.txt" 2>&1 || true
sleep 3
curl -s http://127.0.0.1:19960/metrics | grep -E '^siphook_outbox_(segments|pending|size_bytes)|^siphook_events_refused'
kill "$pid"; wait "$pid" 2>/dev/null
