#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers with cargo fuzz (libFuzzer).
#   fuzz/run.sh            smoke: every target for 20 s (what CI runs)
#   fuzz/run.sh 3600       every target for an hour
#   fuzz/run.sh 600 composition   one target
# cargo fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# them (this machine has one toolchain and cannot fetch another).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(webhook_parse webhook_engine composition merchant_answers)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${seconds}s"
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 2>&1 \
    | grep -E "Done [0-9]+ runs|ERROR|panicked|SUMMARY|stat::number_of_executed_units" || true
  # libFuzzer writes crash-* / leak-* / timeout-* files into artifacts/ on a failure.
  if ls "artifacts/$t"/crash-* "artifacts/$t"/leak-* "artifacts/$t"/timeout-* >/dev/null 2>&1; then
    echo "fuzz target $t found a failing input: fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
