#!/usr/bin/env bash
# One rotation round of the release wisp-agent against the local fakes: 500 volumes of one SecretProviderClass (10
# secrets, one service account) are published, every secret gets a new version in the fake Key Vault, and after
# --rotation-poll-interval (20 s) kubelet's republish of all 500 is played, 16 calls in flight, 5 ms injected at
# Entra and Key Vault. Prints the Key Vault and Entra requests of the round (expected: one Key Vault read per
# object), its wall time, the agent's CPU time and memory, and checks every volume shows the new bytes (see the
# `## Rotation` section of BENCHMARKS.md).
#
#   bench/agent-rotation.sh [wisp-agent-bench flags]   e.g. --rotation-volumes 1000 --rotation-parallel 32
#
# Takes ~25 s after the build (most of it waiting for the interval). Root gives tmpfs mounts in the agent's own
# mount namespace (otherwise plain directories). Everything it starts and mounts is removed before it exits.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p wisp-agent --bin wisp-agent
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p integration-tests --bin wisp-agent-bench
echo "load before: $(uptime)" >&2
"$root/target/release/wisp-agent-bench" --no-build --rotation "$@"
echo "load after: $(uptime)" >&2
