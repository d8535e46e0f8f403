#!/usr/bin/env bash
# The checks that need a GPU, in one go: the CUDA tests (tests/test_cuda.py), then the loss and
# training-step benchmarks on the GPU (each prints its table with ratios against its baseline).
# CI has no GPU; run this on a CUDA machine after the project's setup:
#
#   tools/gpu_checks.sh [LOG_DIR]        # logs: LOG_DIR/{tests,bench_*}.log (default: output/gpu)
#
# PYTHON selects the interpreter (default: .venv/bin/python, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
LOG_DIR=${1:-output/gpu}
mkdir -p "$LOG_DIR"
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
status=0

step() {  # step NAME CMD...: run, tee the log, remember a failure, go on with the next step
    local name=$1
    shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$LOG_DIR/$name.log" || { status=1; echo "=== $name FAILED"; }
}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
step tests "$PY" -m pytest tests/test_cuda.py -v -rs
step bench_loss_fp32 "$PY" tools/benchmark_loss.py --device cuda --repeats 10
step bench_loss_bf16 "$PY" tools/benchmark_loss.py --device cuda --repeats 10 --dtype bfloat16
step bench_step_r18 "$PY" tools/benchmark_train_step.py --device cuda --iters 10
step bench_step_r50 "$PY" tools/benchmark_train_step.py --device cuda --iters 10 \
    --depth 50 --channels 256 --head-convs 4 --image-size 800 1344 --batch-size 2
exit $status
