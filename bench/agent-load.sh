#!/usr/bin/env bash
# The agent's load figures of RELIABILITY.md (`## Load`): the release wisp-agent against the local fakes (5 ms
# injected at Entra and Key Vault), played as kubelet plays it over the CSI socket.
#
#   bench/agent-load.sh
#
# 1. Burst: 200 NodePublishVolume calls at once for distinct pods and service accounts, 20 secrets each, BURST_ROUNDS
#    times in a row (default 5): every call's answer time against kubelet's 2-minute deadline, the agent's RSS and
#    open file descriptors before, at their peak and after, every volume's 20 files checked byte for byte.
# 2. Rotation: 2,000 mounted volumes (10 secrets each) republished in one rotation round, all calls at once
#    (ROTATION_VOLUMES, ROTATION_PARALLEL): the same figures, every file checked to hold the new version.
#
# Each run then idles SETTLE_SECS (default 100) with nothing mounted and reads RSS and descriptors once more (idle
# pooled connections close after the agent's 90 s pool idle timeout). Takes about five minutes after the build.
# Root gives tmpfs mounts in the agent's own mount namespace (otherwise plain directories). Everything it starts and
# mounts is removed before it exits. Honours CARGO_TARGET_DIR.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p wisp-agent --bin wisp-agent
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p integration-tests --bin wisp-agent-bench
bench="$target/release/wisp-agent-bench"
echo "load before: $(uptime)" >&2
"$bench" --no-build --burst 200 --burst-objects 20 --burst-rounds "${BURST_ROUNDS:-5}" --settle-secs "${SETTLE_SECS:-100}"
echo "load between: $(uptime)" >&2
"$bench" --no-build --rotation --rotation-volumes "${ROTATION_VOLUMES:-2000}" \
  --rotation-parallel "${ROTATION_PARALLEL:-2000}" --settle-secs "${SETTLE_SECS:-100}"
echo "load after: $(uptime)" >&2
