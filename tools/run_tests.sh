#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the whole pytest suite (CPU).
# Extra arguments go to pytest, e.g. `tools/run_tests.sh -k losses -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Say up front when the disk cannot hold the run: a fresh .venv takes 6.2 GB (torch's wheel) and a
# full run peaks near 1 GB of checkpoints under the temporary folder (deleted when the tests pass).
free_gb() { df -Pk "$1" | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }
tmp=${TMPDIR:-/tmp}
need_tmp=2
[ -f .venv/.efl_d2_setup_stamp ] || need_repo=7
if [ "$(free_gb "$tmp")" -lt "$need_tmp" ]; then
  echo "[run_tests] warning: $(free_gb "$tmp") GB free under $tmp, the suite needs ~$need_tmp GB there (set TMPDIR elsewhere)" >&2
fi
if [ -n "${need_repo:-}" ] && [ "$(free_gb .)" -lt "$need_repo" ]; then
  echo "[run_tests] warning: $(free_gb .) GB free for .venv, a fresh install needs ~$need_repo GB" >&2
fi
bash tools/setup_env.sh
exec .venv/bin/python -m pytest tests "$@"
