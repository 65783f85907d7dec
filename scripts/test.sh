#!/usr/bin/env bash
# wisp's whole test suite, from a fresh clone: every crate's unit tests, the end-to-end tests that start the real
# wisp-webhook and wisp-agent binaries against the local fakes (and call the agent's sockets with Python's gRPC
# clients, not only wisp's own), and the Helm chart tests (rendered, linted and validated against the Kubernetes
# schemas offline, the admission policies' CEL evaluated). The Python packages go into one venv, `.venv`.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check \
  -r helm/tests/requirements.txt -r integration-tests/python/requirements.txt
export WISP_TEST_PYTHON="$PWD/.venv/bin/python"

# Each crate's modules import only downward (no cycle, no module importing its ancestor).
python3 scripts/check-imports.py agent/src webhook/src certs/src shared/src kubectl-wisp/src sync/src

# The end-to-end tests start the binaries of other packages, so build them all first.
cargo build --workspace --bins
cargo test --workspace

.venv/bin/python -m pytest helm/tests -q
