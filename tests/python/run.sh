#!/usr/bin/env bash
# Polyglot end-to-end check: a Python grpcio client against the mesh (`pm run`).
# Run from the repository root after `cargo build -p pm` (or set PM_BIN to the binary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install -q -r tests/python/requirements.txt
exec python3 -m pytest -q tests/python "$@"
