#!/usr/bin/env bash
# The webhook's load figures of RELIABILITY.md (`## Load`): the release wisp-webhook against the fake Kubernetes
# API, 50 connections of admissions while ServiceAccounts are created and their client-id annotation changed. It is
# the end-to-end test `integration-tests/tests/webhook_load.rs` (which CI runs small) with bigger sizes, built in
# release; it fails unless every admission answered with no error and no stale state, and prints one line of
# figures (admissions, answers one event behind, stale, errors, latency, live GETs, the webhook's VmHWM).
#
#   bench/webhook-churn.sh [CONNECTIONS] [SERVICE_ACCOUNTS] [WRITES]     defaults: 50 100 2000
#
# The webhook runs with the test harness's flags (debug log level, logs captured by the test). Honours
# CARGO_TARGET_DIR.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p wisp-webhook --bin wisp-webhook
echo "load before: $(uptime)" >&2
WISP_LOAD_CONNECTIONS=${1:-50} WISP_LOAD_SERVICE_ACCOUNTS=${2:-100} WISP_LOAD_WRITES=${3:-2000} \
  cargo test --quiet --release --manifest-path "$root/Cargo.toml" -p integration-tests --test webhook_load \
  -- --nocapture 2>&1 | grep -E '^webhook churn|^test result|panicked|FAILED'
echo "load after: $(uptime)" >&2
