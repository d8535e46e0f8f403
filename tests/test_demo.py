"""The README's main command's code path (``tools/run_demo.sh`` runs ``tools/train_net.py`` on
``configs/mini_lvis/atss_efl_R18.py``) with a tiny budget: progress, no third-party deprecation
warnings, the AP table and the picture of predictions named in the summary."""

import os
import re

import numpy as np
import pytest
from _tiny_zoo import TINY_TRAIN_OVERRIDES, run_train_net, single_thread_env
from detectron2.config import LazyConfig, instantiate
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/mini_lvis/atss_efl_R18.py")


def test_demo_schedule_is_the_cpu_configs_schedule_stretched():
    """The demo sets only train.max_iter: its lr_multiplier is the 300-iteration CPU configs' node,
    which LRMultiplier evaluates at iteration / train.max_iter (warm-up 1/6, steps 2/3 and 0.9)."""
    demo = LazyConfig.load(CONFIG)
    short = LazyConfig.load(os.path.join(REPO, "configs/mini_lvis/paa_efl_R18.py"))
    assert demo.train.max_iter == 800 and short.train.max_iter == 300
    assert demo.lr_multiplier == short.lr_multiplier
    mult = instantiate(demo.lr_multiplier)
    lr = [mult(i / demo.train.max_iter) for i in range(demo.train.max_iter)]
    assert lr[133] < 1.0 == lr[134] == lr[533]  # warm-up over the first 800 / 6 iterations
    assert lr[534] == lr[719] == pytest.approx(0.1) and lr[720] == lr[-1] == pytest.approx(0.01)


@pytest.mark.slow
def test_main_command_prints_progress_ap_and_the_picture(tmp_path, mini_lvis_root):
    out = tmp_path / "demo"
    env = single_thread_env()
    env.update(DETECTRON2_DATASETS=mini_lvis_root, CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONWARNINGS", None)  # the filters under test are efl_d2's, not the caller's
    proc = run_train_net(
        [
            "--config-file",
            CONFIG,
            *TINY_TRAIN_OVERRIDES,  # the test build of mini-LVIS
            "train.max_iter=4",
            "train.log_period=2",
            "train.vis_images=2",
            f"train.output_dir={out}",
        ],
        env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    # detectron2's progress lines (CommonMetricPrinter) at train.log_period; the ETA once
    # IterationTimer has timed an iteration
    progress = re.findall(r"(eta: \S+\s+)?iter: (\d+)\s+total_loss: [\d.]+", log)
    assert [it for _, it in progress] == ["1", "3"] and progress[-1][0], progress
    for noise in ("torch.jit.script` is deprecated", "pkg_resources is deprecated", "meshgrid"):
        assert noise not in log, noise

    summary = proc.stdout.split("==== efl_d2 summary ====")[1]
    assert re.search(r"bbox(\s+[\d.]+){6}", summary)  # the AP table
    named = re.search(r"picture:\s+(\S+\.png)", summary)
    assert named and os.path.samefile(named.group(1), out / "predictions_val.png")
    with Image.open(named.group(1)) as im:
        picture = np.asarray(im.convert("RGB"))
    # two rows (val images are 96x128 at most, drawn 1.5x) of prediction | ground-truth panels
    assert 2 * 96 * 1.5 < picture.shape[0] and 2 * 96 * 1.5 < picture.shape[1] < 2 * 128 * 1.5 + 20
    assert picture.std() > 10  # images drawn, not a blank canvas
