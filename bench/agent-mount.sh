#!/usr/bin/env bash
# Mount latency and memory of the release wisp-agent against the local fakes (fake Kubernetes API, Entra and Key
# Vault, latency injected at Entra and Key Vault), played as kubelet plays it over the CSI socket. Prints the
# results tables (see the `## Agent` section of BENCHMARKS.md).
#
#   bench/agent-mount.sh [wisp-agent-bench flags]     e.g. --iterations 50 --volumes 1000 --latency-ms 10
#
# Builds wisp-agent and wisp-agent-bench (release) first. Runs as root for tmpfs mounts in the agent's own mount
# namespace (otherwise the agent writes plain directories: `--mount-mode directory`). Everything it starts and
# mounts is removed before it exits, including on failure or Ctrl-C. `--help` lists the flags.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p wisp-agent --bin wisp-agent
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p integration-tests --bin wisp-agent-bench
exec "$root/target/release/wisp-agent-bench" --no-build "$@"
