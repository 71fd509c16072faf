#!/usr/bin/env bash
# Runs every fuzz target briefly (default 30 s each) from its seeds; any crash, hang
# or leak fails. Every fuzz_targets/*.rs is a target, so a new one is picked up
# without editing this file (it must also have its [[bin]] in Cargo.toml, checked
# below). Needs cargo-fuzz (cargo install --locked cargo-fuzz) and, on a stable
# toolchain, RUSTC_BOOTSTRAP=1 for the sanitizer flags cargo-fuzz passes.
#
#   fuzz/run-briefly.sh [SECONDS]
#
# New inputs libFuzzer finds go to corpus/TARGET (not committed); a crashing input
# to artifacts/TARGET/, named in the output.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
export RUSTC_BOOTSTRAP=1

targets=()
for f in fuzz_targets/*.rs; do
  targets+=("$(basename "$f" .rs)")
done
registered=$(cargo fuzz list)
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$registered"; then
    echo "fuzz target $t has no [[bin]] entry in fuzz/Cargo.toml" >&2
    exit 1
  fi
done

# One build of every target (release with debug assertions, AddressSanitizer).
start=$SECONDS
cargo fuzz build -O
echo "fuzz build took $((SECONDS - start)) s"

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  echo "fuzzing $t for ${secs}s"
  start=$SECONDS
  # -timeout: one input running 25 s is a hang, a bug in a parser fed by the network.
  if ! cargo fuzz run -O "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
    2>"artifacts/$t.log"; then
    tail -n 60 "artifacts/$t.log" >&2
    echo "fuzz target $t failed: the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "artifacts/$t.log" | tr '\n' ' '
  echo "($t took $((SECONDS - start)) s)"
done
