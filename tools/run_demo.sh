#!/usr/bin/env bash
# The README's main command: set up .venv if needed, generate mini-LVIS if needed, train the
# default detector on it on CPU for a few minutes, evaluate with LVISEvaluator and print
# AP / APr / APc / APf and where the checkpoint and metrics are.
# Extra arguments are config overrides, e.g. `tools/run_demo.sh train.max_iter=100`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-datasets}
.venv/bin/python -c "import sys; from efl_d2.data import ensure_mini_lvis; ensure_mini_lvis(sys.argv[1])" "$DETECTRON2_DATASETS"
exec .venv/bin/python tools/train_net.py --config-file configs/mini_lvis/atss_efl_R18.py \
  train.output_dir=output/mini_lvis_demo "$@"
