"""tools/train_net.py end to end on mini-LVIS (2 processes over Gloo), overrides, hooks."""

import json
import os
from pathlib import Path

import pytest
import torch
from _lvis_cases import lvis_api_eval
from _tiny_zoo import TINY_DATA_OVERRIDES, TINY_TRAIN_OVERRIDES, run_train_net
from detectron2.config import LazyConfig, instantiate
from detectron2.data.samplers import RepeatFactorTrainingSampler

from efl_d2.engine import ConfigCheckError, GradientClipHook, apply_overrides_strict

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

    # --resume continues from the last checkpoint (iteration 3) instead of starting over; a
    # longer schedule is a config change allowed on purpose
    log = _run(
        [
            "--config-file",
            CONFIG,
            "--resume",
            "--allow-config-change",
            *common,
            "train.max_iter=4",
            f"train.output_dir={out}",
        ],
        env_with_datasets,
    )
    assert "Starting training from iteration 3" in log


def test_unknown_override_key_is_an_error_with_a_suggestion():
    cfg = LazyConfig.load(CONFIG)
    with pytest.raises(ConfigCheckError, match=r"did you mean train\.max_iter\?") as e:
        apply_overrides_strict(cfg, ["train.max_itr=10", "optimizer.lrr=1"])
    assert len(e.value.problems) == 2 and "optimizer.lr" in e.value.problems[1]
    apply_overrides_strict(cfg, ["train.max_iter=7", "+train.new_key=1"])
    assert cfg.train.max_iter == 7 and cfg.train.new_key == 1


def test_a_key_the_config_leaves_to_its_callable_default_is_known():
    """``dataloader.evaluator.scorer`` and ``dataloader.train.loader`` are arguments of the nodes'
    callables (LVISEvaluator, build_rfs_train_loader): overriding them is no typo."""
    cfg = LazyConfig.load(CONFIG)
    assert "scorer" not in cfg.dataloader.evaluator and "loader" not in cfg.dataloader.train
    apply_overrides_strict(
        cfg, ["dataloader.evaluator.scorer=detectron2", "dataloader.train.loader=detectron2"]
    )
    assert cfg.dataloader.evaluator.scorer == "detectron2"
    assert cfg.dataloader.train.loader == "detectron2"
    with pytest.raises(ConfigCheckError, match="scorer"):
        apply_overrides_strict(cfg, ["dataloader.evaluator.scorr=detectron2"])


def test_detectron2_rfs_loader_gets_the_same_repeat_factors(mini_lvis_root, monkeypatch):
    """``dataloader.train.loader=detectron2``: Detectron2's ``build_detection_train_loader`` with
    its ``RepeatFactorTrainingSampler``, the factors of the config's threshold, the run's seed."""
    from efl_d2.data import build

    cfg = apply_overrides_strict(
        LazyConfig.load(CONFIG),
        [*TINY_DATA_OVERRIDES, "dataloader.train.loader=detectron2", "+dataloader.train.seed=5"],
    )
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert len(batch) == 2 and all("image" in d and "instances" in d for d in batch)

    calls = []
    monkeypatch.setattr(build, "build_detection_train_loader", lambda **kw: calls.append(kw))
    instantiate(cfg.dataloader.train)
    sampler = calls[0]["sampler"]
    assert isinstance(sampler, RepeatFactorTrainingSampler) and sampler._seed == 5
    dicts = instantiate(cfg.dataloader.train.dataset)
    want = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        dicts, cfg.dataloader.train.repeat_thresh
    )
    assert want.max() > 1  # the threshold repeats some images
    torch.testing.assert_close(sampler._int_part + sampler._frac_part, want)
    assert calls[0]["total_batch_size"] == 2 and calls[0]["aspect_ratio_grouping"]


@pytest.mark.slow
def test_train_net_with_detectron2_rfs_loader_and_its_inexact_resume(tmp_path, env_with_datasets):
    out = tmp_path / "run"
    args = [
        "--config-file",
        CONFIG,
        *TINY_TRAIN_OVERRIDES,
        "dataloader.train.loader=detectron2",
        "train.checkpointer.period=1",
        "train.vis_images=0",
        f"train.output_dir={out}",
    ]
    log = _run([*args, "train.max_iter=2"], env_with_datasets)
    assert (out / "model_final.pth").is_file() and "efl_d2 summary" in log
    assert "not bit-exact" not in log
    # one more iteration: a longer schedule, allowed on purpose
    log = _run([*args, "train.max_iter=3", "--resume", "--allow-config-change"], env_with_datasets)
    assert "Starting training from iteration 2" in log
    assert "the resume is not bit-exact" in log


def _copypaste(log: str) -> list[str]:
    """detectron2's ``print_csv_format`` lines (task, metric names, values to 4 decimals)."""
    return [
        line.split("copypaste:")[1].strip() for line in log.splitlines() if "copypaste:" in line
    ]


@pytest.mark.slow
def test_detectron2_scorer_from_train_net_gives_efl_d2_scorer_numbers(tmp_path, env_with_datasets):
    """``dataloader.evaluator.scorer=detectron2`` (Detectron2's own LVIS evaluation) through
    tools/train_net.py: the same metrics as efl_d2's scorer on the same (seeded) model."""
    args = ["--config-file", CONFIG, "--eval-only", "--allow-random-weights", *TINY_TRAIN_OVERRIDES]
    logs = {
        scorer: _run(
            [
                *args,
                "train.vis_images=0",
                f"dataloader.evaluator.scorer={scorer}",
                f"train.output_dir={tmp_path / scorer}",
            ],
            env_with_datasets,
        )
        for scorer in ("efl_d2", "detectron2")
    }
    assert "protocol 'standard'" in logs["efl_d2"]  # efl_d2's scoring ran ...
    assert "protocol 'standard'" not in logs["detectron2"]  # ... and here Detectron2's instead
    ours, theirs = _copypaste(logs["efl_d2"]), _copypaste(logs["detectron2"])
    assert len(ours) == 3 and ours[1].startswith("AP,AP50") and ours == theirs


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
