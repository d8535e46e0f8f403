"""tools/train_net.py end to end on mini-LVIS (2 processes over Gloo), overrides, hooks."""

import json
import os
from pathlib import Path

import pytest
import torch
from _lvis_cases import lvis_api_eval
from _tiny_zoo import TINY_TRAIN_OVERRIDES, run_train_net
from detectron2.config import LazyConfig

from efl_d2.engine import GradientClipHook, apply_overrides_strict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/mini_lvis/atss_efl_R18.py")


def _run(args, env):
    proc = run_train_net(args, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_process_gloo_training_then_eval_only(tmp_path, env_with_datasets):
    out = tmp_path / "run"
    common = TINY_TRAIN_OVERRIDES
    log = _run(
        [
            "--config-file",
            CONFIG,
            "--num-gpus",
            "2",
            "--dist-url",
            "auto",
            *common,
            "train.max_iter=3",
            "train.checkpointer.period=2",
            "train.clip_grad=35",
            f"train.output_dir={out}",
            f"+dataloader.evaluator.output_dir={out / 'inference'}",
        ],
        env_with_datasets,
    )
    assert "World size: 2" in log
    assert (out / "model_final.pth").is_file() and (out / "model_0000001.pth").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("grad_norm" in m for m in metrics)  # the clipping hook ran
    assert any("efl/gamma_r" in m and "efl/g_f" in m for m in metrics)  # EFL statistics logged
    assert any("bbox/APr" in m for m in metrics)  # final evaluation through LVISEvaluator
    assert "efl_d2 summary" in log and "APr" in log and "model_final.pth" in log
    # the final evaluation (efl_d2's scorer, detections gathered from both processes) reports
    # exactly lvis-api's numbers for the detections it saved
    final = next(m for m in reversed(metrics) if "bbox/AP" in m)
    results = json.loads((out / "inference" / "lvis_instances_results.json").read_text())
    gt = Path(env_with_datasets["DETECTRON2_DATASETS"], "lvis", "mini_lvis_v1_val.json")
    ev = lvis_api_eval(json.loads(gt.read_text()), results)
    for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"):
        assert final[f"bbox/{m}"] == float(ev.results[m] * 100), m
    assert "Rank 1 scored" in (out / "log.txt.rank1").read_text()  # both ranks scored a share

    log = _run(
        [
            "--config-file",
            CONFIG,
            "--eval-only",
            *common,
            "train.device=cuda",
            f"train.init_checkpoint={out / 'model_final.pth'}",
            f"train.output_dir={tmp_path / 'ev'}",
        ],
        env_with_datasets,
    )
    assert "APc" in log and "CUDA is not available" in log

    # --resume continues from the last checkpoint (iteration 3) instead of starting over
    log = _run(
        [
            "--config-file",
            CONFIG,
            "--resume",
            *common,
            "train.max_iter=4",
            f"train.output_dir={out}",
        ],
        env_with_datasets,
    )
    assert "Starting training from iteration 3" in log


def test_unknown_override_key_is_an_error_with_a_suggestion():
    cfg = LazyConfig.load(CONFIG)
    with pytest.raises(KeyError, match=r"train\.max_iter"):
        apply_overrides_strict(cfg, ["train.max_itr=10"])
    apply_overrides_strict(cfg, ["train.max_iter=7", "+train.new_key=1"])
    assert cfg.train.max_iter == 7 and cfg.train.new_key == 1


def test_gradient_clip_hook_clips_global_norm():
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    (lin(torch.full((2, 4), 10.0)).sum() * 100).backward()
    grads = [p.grad.clone() for p in lin.parameters()]
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    assert norm > 1.0

    class _Storage:
        def put_scalar(self, name, value, smoothing_hint=True):
            self.logged = (name, value)

    hook = GradientClipHook(1.0)
    hook.trainer = type("T", (), {"optimizer": opt, "storage": _Storage()})()
    hook.after_backward()
    clipped = [p.grad for p in lin.parameters()]
    new_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in clipped]))
    assert new_norm == pytest.approx(1.0, rel=1e-4)
    for g, c in zip(grads, clipped):  # direction is kept: every gradient scaled by 1 / norm
        torch.testing.assert_close(c, g / norm, rtol=1e-4, atol=1e-6)
    assert hook.trainer.storage.logged == ("grad_norm", pytest.approx(float(norm)))
    with pytest.raises(ValueError):
        GradientClipHook(0)
