#!/usr/bin/env bash
# wisp's whole test suite, from a fresh clone: every crate's unit tests, the end-to-end tests that start the real
# wisp-webhook and wisp-agent binaries against the local fakes, and the Helm chart tests (rendered, linted and
# validated against the Kubernetes schemas offline, in a Python venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# The end-to-end tests start the binaries of other packages, so build them all first.
cargo build --workspace --bins
cargo test --workspace

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r helm/tests/requirements.txt
.venv/bin/python -m pytest helm/tests -q
