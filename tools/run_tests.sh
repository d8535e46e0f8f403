#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the whole pytest suite (CPU).
# Extra arguments go to pytest, e.g. `tools/run_tests.sh -k losses -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python -m pytest tests "$@"
