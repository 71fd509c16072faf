#!/usr/bin/env bash
# Two siphook binaries, interleaved run by run, on the same load: what a change did to
# the SIP-to-webhook latency, decided on one noisy machine by medians taken in the
# same minutes. Each run is `siphook bench --spawn --baseline`, so every row also
# has the null relay of that moment beside it; CPU is the bench process's user+sys
# (generator, receiver, siphook and relay phases together).
#
#   [AB_TRANSPORT=udp|tcp|hep] benches/ab.sh OLD_BINARY NEW_BINARY [OUT_DIR] [RUNS] [RATES...]
#   e.g. git worktree add /tmp/old HEAD~1 && (cd /tmp/old && cargo build --release)
#        benches/ab.sh /tmp/old/target/release/siphook target/release/siphook
set -euo pipefail
old=$1 new=$2 out=${3:-target/ab} runs=${4:-3}
shift $(($# < 4 ? $# : 4))
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(100 1000)
mkdir -p "$out"
for rep in $(seq 1 "$runs"); do
  for rate in "${rates[@]}"; do
    # Alternate which goes first, so a trend on the machine favours neither.
    if [ $((rep % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
    for which in $order; do
      bin=$old; [ "$which" = new ] && bin=$new
      /usr/bin/time -f "%U %S" -o "$out/cpu-$which-$rate-$rep" \
        "$bin" bench --spawn --rate "$rate" --duration 20s --baseline --transport "${AB_TRANSPORT:-udp}" \
        --json "$out/$which-$rate-$rep.json" >"$out/$which-$rate-$rep.txt" 2>&1 || true
    done
  done
done
python3 - "$out" "$runs" "${rates[@]}" <<'PY'
import json, statistics as st, sys
out, runs, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| calls/s | binary | p50 (ms) | p99 (ms) | relay p50 / p99 | p50 / relay | lost | CPU s |")
print("|---|---|---|---|---|---|---|---|")
for rate in rates:
    for which in ("old", "new"):
        rows = []
        for rep in range(1, runs + 1):
            try:
                d = json.load(open(f"{out}/{which}-{rate}-{rep}.json"))
            except (OSError, ValueError):
                continue
            cpu = sum(map(float, open(f"{out}/cpu-{which}-{rate}-{rep}").read().split()[-2:]))
            s, r = d["siphook"]["latency_ms"], d["baseline"]["latency_ms"]
            rows.append((s["p50"], s["p99"], r["p50"], r["p99"], d["ratios"]["p50"], d["siphook"]["lost"], cpu))
        if not rows:
            continue
        m = [st.median(x[i] for x in rows) for i in range(7)]
        print(f"| {rate} | {which} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} / {m[3]:.2f} | {m[4]:.1f}× | {sum(x[5] for x in rows)} | {m[6]:.1f} |")
PY
