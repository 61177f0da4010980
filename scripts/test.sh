#!/usr/bin/env bash
# The project's test command (README and .ci/run both call exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/dev-setup.sh
exec .venv/bin/python -m pytest -q "$@"
