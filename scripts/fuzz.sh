#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every boundary where wisp reads input it does not control:
# each target of fuzz/ in turn, for SECONDS each (default 300), one fuzzing process at a time and niced, so that a
# shared machine keeps building. What each target checks: RELIABILITY.md `## Fuzzing`.
#
#   scripts/fuzz.sh [SECONDS]           all targets
#   FUZZ_TARGETS="admission" scripts/fuzz.sh 600
#
# New inputs that reach new code go to fuzz/corpus/<target>/ (commit them after `cargo fuzz cmin`); a crash stops
# its target, leaves the input in fuzz/artifacts/<target>/ and makes the script fail after the other targets ran.
# Fix the code, add a unit test beside it and copy the input to fuzz/corpus/<target>/crash-<what>: `cargo test`
# replays every corpus file through the same check (agent/tests/fuzz_corpus.rs, webhook/tests/fuzz_corpus.rs).
#
# Runs on the stable toolchain: `--sanitizer none` needs no nightly flag (wisp forbids unsafe code, so
# AddressSanitizer has little to find and would halve the speed). Logs: fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-300}"
targets="${FUZZ_TARGETS:-admission spc_params volume_context keyvault_render state_file cloud_env token_response keyvault_pages}"

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
nice -n 15 cargo fuzz build --sanitizer none

mkdir -p logs
failed=()
for target in $targets; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "== $target: ${seconds}s"
  status=0
  nice -n 15 cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -dict="dicts/$target.dict" \
    -print_final_stats=1 >"logs/$target.log" 2>&1 || status=$?
  # libFuzzer's final figures: executions, their rate, the corpus size and peak memory.
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "logs/$target.log" || true
  echo "corpus: $(find "corpus/$target" -type f | wc -l) inputs"
  if [ "$status" -ne 0 ]; then
    echo "!! $target failed (exit $status): see logs/$target.log and artifacts/$target/"
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "targets with a crash: ${failed[*]}"
  exit 1
fi
