#!/usr/bin/env bash
# Create .venv/ and install efl_d2 with its stack, in the order that works on this project's
# machines (see README "Installation"). Idempotent: a finished install is recorded in a stamp file
# keyed by this script's content and setup.py, so a second run returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.efl_d2_setup_stamp"
key=$(cat tools/setup_env.sh setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ] && "$VENV/bin/python" -c "import detectron2, efl_d2" 2>/dev/null; then
  exit 0
fi
echo "[setup] creating $VENV and installing torch, detectron2 and efl_d2 (first run: a few minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
# 1. torch + torchvision; setuptools<81 in the same command because torch pulls the newest one and
#    detectron2.model_zoo still imports pkg_resources.
pip install -q "torch==2.14.1" "torchvision==0.29.1" "setuptools<81" wheel
# 2. detectron2: the sal-detectron2 wheel only carries a cp310 tag; its pure-Python part works on
#    3.10+ (the compiled _C is optional), so install it without deps straight into site-packages.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! "$VENV/bin/python" -c "import detectron2" 2>/dev/null; then
  pip install -q --no-deps --only-binary=:all: --python-version 3.10 --upgrade --target "$SITE" "sal-detectron2==0.7.2"
fi
# The wheel ships detectron2's own scripts as a top-level `tools` package, which would shadow ours.
rm -rf "$SITE/tools"
# 3. detectron2's runtime dependencies (its metadata pins numpy<2: wrong for this stack, not applied).
pip install -q "fvcore>=0.1.5" "iopath>=0.1.7" "omegaconf>=2.1,<2.4" "hydra-core>=1.1" pycocotools \
  termcolor yacs tabulate cloudpickle tqdm matplotlib black packaging Pillow tensorboard "lvis==0.5.3"
# 4. this project, editable, with the dev and export (ONNX, onnxruntime) extras.
pip install -q --no-build-isolation -e ".[dev,export]"
"$VENV/bin/python" -c "import detectron2, efl_d2; print('[setup] ok: detectron2', detectron2.__version__)"
echo "$key" > "$STAMP"
