#!/usr/bin/env bash
# Runs every fuzz target briefly (default 30 s each) from its seed corpus; any
# crash fails. Needs cargo-fuzz (cargo install cargo-fuzz) and, on a stable
# toolchain, RUSTC_BOOTSTRAP=1 for the sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "fuzzing $t for ${secs}s"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
