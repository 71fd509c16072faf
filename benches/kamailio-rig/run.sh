#!/usr/bin/env bash
# The Kamailio comparison rig (issue 6 §3): SIPp caller → Kamailio → SIPp callee,
# Kamailio posting its own webhooks (http_client, from dialog event routes) and
# mirroring HEPv3 to siphook, both posting to one receiver; a loopback capture of
# the SIP legs gives the trigger times. One run per (Kamailio hook mode, endpoint
# behaviour); the analyser prints, per run, both systems' latency, missing and
# duplicate events, and the harm to the calls. Everything stays on 127.0.0.1.
#
#   benches/kamailio-rig/run.sh                 # every run, results in $OUT
#   RATE=50 DURATION=40 RUNS="none-fast sync-fast" benches/kamailio-rig/run.sh
#
# Parameters (environment):
#   RATE       calls started per second (default 50)
#   DURATION   seconds of calls per run (default 40)
#   RUNS       which runs, in order (default: all). A run is MODE-ENDPOINT with
#              MODE "none" (Kamailio posts nothing: siphook alone, as deployed),
#              "sync" (http_client_query in the SIP worker) or "queue" (mqueue +
#              rtimer processes posting), and ENDPOINT "fast" (answers at once), "slow"
#              (answers after SLOW_MS), "down" (refuses connections for DOWN_FOR
#              seconds from DOWN_AT seconds into the calls) or "hang" (accepts and
#              never answers in that window)
#   SLOW_MS    the slow endpoint's delay (default 50)
#   DOWN_AT, DOWN_FOR  the down window (default 5 and 30 seconds)
#   CHILDREN   Kamailio UDP workers (default 8, Debian's stock kamailio.cfg)
#   QUEUE_PROCS  processes draining Kamailio's webhook queue in "queue" runs
#              (default: CHILDREN)
#   DRAIN      longest wait, after the last call, for both systems' backlogs
#              (default 180 seconds); what has not arrived by then is missing
#   BASE_PORT  first of the loopback ports used (default 25060)
#   REORDER_WINDOW  siphook's sip.reorder_window (default 200ms, its default; 0s
#              turns the hold of early copies off, to see what it repairs)
#   OUT        results directory (default target/kamailio-rig/<date>)
#   NICE       run the rig's processes at this nice level, with best-effort I/O
#              priority 0 (e.g. -5 on a machine shared with builds; default: as is)
#   SIPHOOK    the siphook binary (default target/release/siphook, built if absent)
#
# Needs: kamailio with kamailio-utils-modules (http_client, mqueue, rtimer), sipp
# (sip-tester), tcpdump, curl, and root or CAP_NET_RAW for the capture.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RATE="${RATE:-50}"
DURATION="${DURATION:-40}"
SLOW_MS="${SLOW_MS:-50}"
DOWN_AT="${DOWN_AT:-5}"
DOWN_FOR="${DOWN_FOR:-30}"
CHILDREN="${CHILDREN:-8}"
QUEUE_PROCS="${QUEUE_PROCS:-$CHILDREN}"
DRAIN="${DRAIN:-180}"
BASE_PORT="${BASE_PORT:-25060}"
REORDER_WINDOW="${REORDER_WINDOW:-200ms}"
RUNS="${RUNS:-none-fast none-slow none-down none-hang sync-fast sync-slow sync-down sync-hang queue-fast queue-slow queue-down queue-hang}"
OUT="${OUT:-$ROOT/target/kamailio-rig/$(date -u +%Y%m%dT%H%M%SZ)}"
SIPHOOK="${SIPHOOK:-$ROOT/target/release/siphook}"
PRIO=()
if [ -n "${NICE:-}" ]; then PRIO=(nice -n "$NICE" ionice -c2 -n0); fi
SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"   # a test secret, never a real one

PROXY_PORT=$BASE_PORT
UAS_PORT=$((BASE_PORT + 10))
UAC_PORT=$((BASE_PORT + 20))
HEP_PORT=$((BASE_PORT + 30))
RECV_PORT=$((BASE_PORT + 40))
ADMIN_PORT=$((BASE_PORT + 41))
CALLS=$(( RATE * DURATION ))

KAMAILIO="$(command -v kamailio || echo /usr/sbin/kamailio)"
for tool in "$KAMAILIO" sipp tcpdump curl; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/http_client.so ] ||
    [ -n "$(find /usr/lib*/ -name http_client.so -path '*kamailio*' 2>/dev/null | head -1)" ] ||
    { echo "missing: Kamailio's http_client module (apt-get install kamailio-utils-modules)" >&2; exit 2; }

if [ ! -x "$SIPHOOK" ]; then
    (cd "$ROOT" && cargo build --release --locked)
fi
RIG="$ROOT/target/release/examples/kamailio_rig"
# The helper is built once (BUILD=1 rebuilds it): the library it links changes
# often, and a release rebuild takes minutes.
if [ ! -x "$RIG" ] || [ "${BUILD:-0}" = 1 ]; then
    (cd "$ROOT" && cargo build --release --locked --example kamailio_rig)
fi
mkdir -p "$OUT"
echo "results in $OUT" >&2
# Every run uses these copies: others may rebuild target/ meanwhile.
cp "$SIPHOOK" "$OUT/siphook"; SIPHOOK="$OUT/siphook"
cp "$RIG" "$OUT/kamailio_rig"; RIG="$OUT/kamailio_rig"
{
    echo "commit $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "NICE=${NICE:-} RATE=$RATE DURATION=$DURATION SLOW_MS=$SLOW_MS DOWN_AT=$DOWN_AT DOWN_FOR=$DOWN_FOR CHILDREN=$CHILDREN QUEUE_PROCS=$QUEUE_PROCS"
    "$KAMAILIO" -v 2>&1 | head -1 || true
    sipp -v 2>&1 | grep -m1 SIPp || true
    grep -m1 "model name" /proc/cpuinfo || true
    echo "cores $(nproc)"
} >"$OUT/setup.txt"

# Processes this script started, stopped by id (Kamailio by its process group).
PIDS=()
GROUPS_=()
cleanup() {
    for g in "${GROUPS_[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for g in "${GROUPS_[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    PIDS=(); GROUPS_=()
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# Waits (bounded) until `cmd` succeeds.
wait_for() {
    local what="$1" secs="$2"; shift 2
    local end=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$end" ]; then echo "timed out waiting for $what" >&2; return 1; fi
        sleep 0.1
    done
}

siphook_drained() {
    local m
    m="$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics")" || return 1
    # Every event delivered: nothing pending for the endpoint.
    ! grep -E '^siphook_outbox_pending\{' <<<"$m" | grep -vqE ' 0$'
}

# Waits (up to DRAIN seconds) until siphook has nothing pending and Kamailio's
# posts have stopped arriving for 5 s (its queue, or its blocked workers, drained).
drain() {
    local end=$(( $(date +%s) + DRAIN )) last="" still=0 now
    while [ "$(date +%s)" -lt "$end" ]; do
        now="$(curl -sf "http://127.0.0.1:$RECV_PORT/stats" | grep kamailio || true)"
        if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; last="$now"; fi
        if [ "$still" -ge 5 ] && siphook_drained; then return 0; fi
        sleep 1
    done
    echo "   not drained after ${DRAIN}s: what is still queued counts as missing" >&2
}

one_run() {
    local run="$1" dir="$OUT/$1" mode endpoint
    mkdir -p "$dir"
    case "$run" in
        none-*|sync-*|queue-*) mode="${run%%-*}"; endpoint="${run#*-}" ;;
        *) echo "unknown run $run" >&2; return 2 ;;
    esac
    echo "== $run: $CALLS calls at $RATE/s, Kamailio hooks: $mode, endpoint: $endpoint; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    echo "load before: $(cat /proc/loadavg)" >"$dir/load.txt"

    # siphook, fed by Kamailio's HEP mirror. The retry schedule is shortened from
    # the default (0s, 5s, 5m, …) so that an outage's backlog is delivered within
    # the run: with the default, events that failed twice wait five minutes.
    cat >"$dir/siphook.toml" <<TOML
[sip]
udp = []
tcp = []
reorder_window = "$REORDER_WINDOW"
[hep]
udp = ["127.0.0.1:$HEP_PORT"]
[outbox]
path = "$dir/outbox"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[[endpoints]]
name = "rig"
url = "http://127.0.0.1:$RECV_PORT/siphook"
allow_http = true
secrets = ["$SECRET"]
retry_schedule = ["0s", "1s", "2s", "4s", "8s", "8s", "8s", "8s", "8s", "8s", "8s", "8s"]
circuit_probe_interval = "2s"
TOML
    "${PRIO[@]}" tcpdump -i lo -n -s 0 -B 65536 -w "$dir/sip.pcap" \
        "udp and port $PROXY_PORT and not port $HEP_PORT" 2>"$dir/tcpdump.log" &
    PIDS+=($!)
    wait_for tcpdump 10 grep -q "listening on" "$dir/tcpdump.log"

    "${PRIO[@]}" "$SIPHOOK" run --config "$dir/siphook.toml" 2>"$dir/siphook.log" &
    PIDS+=($!)
    wait_for siphook 20 curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz"

    local defs=(-A "LISTEN=udp:127.0.0.1:$PROXY_PORT" -A "UAS=\"127.0.0.1:$UAS_PORT\""
        -A "TRACE_URI=\"sip:127.0.0.1:$HEP_PORT\""
        -A "HOOK_URL=\"http://127.0.0.1:$RECV_PORT/kamailio\"" -A "CHILDREN=$CHILDREN")
    case "$mode" in
        sync) defs+=(-A HOOKS_SYNC) ;;
        queue) defs+=(-A HOOKS_QUEUE -A "QUEUE_TIMER=\"name=hooks;interval=2000u;mode=$QUEUE_PROCS;\"") ;;
    esac
    mkdir -p "$dir/kamailio"
    "${PRIO[@]}" setsid "$KAMAILIO" -DD -E -m 256 -M 16 -f "$HERE/kamailio.cfg" -Y "$dir/kamailio" \
        -P "$dir/kamailio/pid" -w "$dir/kamailio" "${defs[@]}" >"$dir/kamailio.log" 2>&1 &
    GROUPS_+=($!)
    wait_for kamailio 20 "$RIG" ping "127.0.0.1:$PROXY_PORT"

    "${PRIO[@]}" sipp -sf "$ROOT/tests/sipp/proxy_uas_answer.xml" -i 127.0.0.1 -p "$UAS_PORT" \
        -m "$CALLS" -nostdin -trace_stat -stf "$dir/uas_stat.csv" -fd 1 \
        >/dev/null 2>"$dir/uas.stderr" &
    local uas=$!
    PIDS+=($uas)
    wait_for "sipp callee" 10 grep -qi ":$(printf %04X "$UAS_PORT") " /proc/net/udp

    local recv_args=(receive --listen "127.0.0.1:$RECV_PORT" --out "$dir/arrivals.jsonl" --secret "$SECRET")
    local t0; t0="$(now_ms)"
    case "$endpoint" in
        fast) ;;
        slow) recv_args+=(--delay-ms "$SLOW_MS") ;;
        down|hang)
            recv_args+=(--down-from-ms $(( t0 + DOWN_AT * 1000 )) --down-until-ms $(( t0 + (DOWN_AT + DOWN_FOR) * 1000 )))
            [ "$endpoint" = hang ] && recv_args+=(--down-mode hang)
            ;;
        *) echo "unknown endpoint $endpoint" >&2; return 2 ;;
    esac
    "${PRIO[@]}" "$RIG" "${recv_args[@]}" 2>"$dir/receiver.log" &
    local recv=$!
    PIDS+=($recv)
    wait_for receiver 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RECV_PORT"

    # The caller: RATE calls per second, CALLS in all; SIPp's own timeout ends a
    # run that hangs.
    local uac_status=0
    "${PRIO[@]}" timeout $(( DURATION + 120 )) sipp -sf "$ROOT/tests/sipp/proxy_uac_answered.xml" \
        -s +15551234567 -i 127.0.0.1 -p "$UAC_PORT" -r "$RATE" -m "$CALLS" -nostdin \
        -trace_stat -stf "$dir/uac_stat.csv" -fd 1 -timeout $(( DURATION + 100 )) \
        "127.0.0.1:$PROXY_PORT" >/dev/null 2>"$dir/uac.stderr" || uac_status=$?
    echo "   caller finished (status $uac_status) after $(( ($(now_ms) - t0) / 1000 )) s" >&2
    # The callee ends after CALLS calls; one that lost calls is stopped.
    local end=$(( $(date +%s) + 15 ))
    while kill -0 "$uas" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
    kill -USR1 "$uas" 2>/dev/null || true

    # siphook's backlog (after an outage) and Kamailio's queue are given time to
    # drain; the deadline covers the shortened retry schedule and circuit probes.
    local t_drain; t_drain="$(now_ms)"
    drain
    echo "   drained in $(( ($(now_ms) - t_drain) / 1000 )) s" >&2
    curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" >"$dir/siphook.metrics" || true

    echo "load after: $(cat /proc/loadavg)" >>"$dir/load.txt"
    cleanup
    wait 2>/dev/null || true
    grep -E "packets (captured|dropped)" "$dir/tcpdump.log" >&2 || true

    local posts=()
    [ "$mode" != none ] && posts=(--kamailio-posts)
    "$RIG" analyse --label "$run ($RATE calls/s, $CALLS calls, endpoint $endpoint, Kamailio hooks $mode)" \
        --capture "$dir/sip.pcap" --arrivals "$dir/arrivals.jsonl" \
        --uac-port "$UAC_PORT" --proxy-port "$PROXY_PORT" --uas-port "$UAS_PORT" \
        --uac-stat "$dir/uac_stat.csv" --uas-stat "$dir/uas_stat.csv" \
        --json "$dir/result.json" "${posts[@]}" | tee "$dir/result.md"
}

dirs=()
for r in $RUNS; do
    one_run "$r"
    dirs+=("$OUT/$r")
done
{
    "$RIG" summary "${dirs[@]}"
    echo
    for r in $RUNS; do cat "$OUT/$r/result.md"; done
} >"$OUT/summary.md"
head -n $(( 2 + 2 * $(wc -w <<<"$RUNS") )) "$OUT/summary.md"
echo "summary: $OUT/summary.md" >&2
