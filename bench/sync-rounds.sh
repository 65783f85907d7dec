#!/usr/bin/env bash
# Rotation rounds of the release wisp-sync against the local fakes: 1,000 SecretSyncs in 10 namespaces (one
# ServiceAccount each, 5 SecretProviderClasses of 3 secrets each) over 50 distinct Key Vault secrets,
# --rotation-poll-interval=20s, 5 ms injected at Entra and Key Vault. Prints, for the first syncs and for each
# periodic round (one after a new version of every secret, the others without a change), the Key Vault, Entra and
# Kubernetes requests (expected: one Key Vault read per object and round), the wall time, the controller's CPU time
# and memory (target: under 40 MiB), and checks every Secret byte for byte (see `## SecretSync` in BENCHMARKS.md).
#
#   bench/sync-rounds.sh [wisp-sync-bench flags]   e.g. --interval-secs 60 --quiet-rounds 1
#
# Takes ~2.5 min after the build (four rounds 20 s apart, after ~30 s of first syncs). Builds into
# $CARGO_TARGET_DIR if set, else target/. wisp-sync is stopped with SIGTERM, and everything it used is removed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p wisp-sync --bin wisp-sync
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p integration-tests --bin wisp-sync-bench
echo "load before: $(uptime)" >&2
"$target/release/wisp-sync-bench" --no-build "$@"
echo "load after: $(uptime)" >&2
