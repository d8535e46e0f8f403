"""Mistakes are reported before the first iteration, all at once; failed runs exit non-zero."""

import math
import os
import shutil

import pytest
import torch
from _tiny_zoo import TINY_TRAIN_OVERRIDES, run_train_net
from detectron2.config import LazyConfig

from efl_d2.engine import (
    ConfigCheckError,
    RunFailed,
    apply_overrides_strict,
    check_results,
    check_run,
    load_config,
    parse_args,
)
from efl_d2.modeling.divergence import check_finite_box_deltas

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/mini_lvis/atss_efl_R18.py")
SMALL = TINY_TRAIN_OVERRIDES


def _cfg(tmp_path, *overrides):
    cfg = apply_overrides_strict(LazyConfig.load(CONFIG), [*SMALL, *overrides])
    cfg.train.output_dir = str(tmp_path / "out")
    return cfg


def _problems(cfg, **kwargs) -> list[str]:
    with pytest.raises(ConfigCheckError) as e:
        check_run(cfg, eval_only=kwargs.pop("eval_only", False), resume=False, **kwargs)
    return e.value.problems


def _train_net(args, env):
    return run_train_net(args, env)


def test_a_good_config_passes(tmp_path, mini_lvis_root):
    check_run(_cfg(tmp_path), eval_only=False, resume=False)


@pytest.mark.slow
def test_every_mistake_is_reported_before_training_in_one_message(tmp_path, env_with_datasets):
    out = tmp_path / "out"
    proc = _train_net(
        [
            "--config-file",
            CONFIG,
            *SMALL,
            "model.num_classes=12",
            "dataloader.test.dataset.names=mini_lvis_v1_vall",
            f"train.init_checkpoint={tmp_path / 'missing.pth'}",
            f"train.output_dir={out}",
        ],
        env_with_datasets,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert "3 problem(s) found before training/evaluation started" in err
    assert "dataset 'mini_lvis_v1_vall' is not registered" in err and "'mini_lvis_v1_val'" in err
    assert "model.num_classes=12" in err and "'mini_lvis_v1_train' has 10 classes" in err
    assert "missing.pth' does not exist" in err
    assert "Starting training" not in err and not (out / "metrics.json").exists()
    assert "Traceback" not in err


@pytest.mark.slow
def test_eval_only_needs_weights_unless_asked_for(tmp_path, env_with_datasets):
    common = ["--config-file", CONFIG, *SMALL, f"train.output_dir={tmp_path}"]
    proc = _train_net([*common, "--eval-only"], env_with_datasets)
    assert proc.returncode == 2
    assert "--eval-only needs weights: set train.init_checkpoint=" in proc.stderr
    # the flag may follow the overrides
    proc = _train_net([*common, "--eval-only", "--allow-random-weights"], env_with_datasets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "evaluating a model with random weights" in proc.stdout + proc.stderr
    )  # the efl_d2 logger prints with detectron2's


def test_missing_val_json_is_reported(tmp_path, mini_lvis_root):
    from efl_d2.data import register_mini_lvis

    root = tmp_path / "datasets"
    shutil.copytree(mini_lvis_root, root, symlinks=True)
    os.remove(root / "lvis" / "mini_lvis_v1_val.json")
    register_mini_lvis(str(root))
    try:
        problems = _problems(_cfg(tmp_path))
    finally:
        register_mini_lvis(mini_lvis_root)
    assert len(problems) == 1
    assert "mini_lvis_v1_val.json' does not exist" in problems[0]
    assert problems[0].startswith("dataloader.test.dataset.names")


def test_names_given_the_wrong_way(tmp_path, mini_lvis_root):
    # a list: detectron2's LVIS evaluator takes one name, so it would fail after training
    problems = _problems(_cfg(tmp_path, "dataloader.test.dataset.names=[mini_lvis_v1_val]"))
    assert (
        "dataloader.evaluator.dataset_name=['mini_lvis_v1_val'] is not the test set"
        in (problems[0])
    )
    assert "give dataloader.test.dataset.names a single name" in problems[0]
    # a string that looks like a list
    cfg = _cfg(tmp_path)
    cfg.dataloader.train.dataset.names = "[mini_lvis_v1_train]"
    assert "one string that looks like a list" in _problems(cfg)[0]
    # a string split into characters
    cfg = _cfg(tmp_path)
    cfg.dataloader.train.dataset.names = list("mini")
    assert "split into characters" in _problems(cfg)[0]


def test_detection_limits_output_dir_and_init_checkpoint(tmp_path, mini_lvis_root):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    bad_ckpt = tmp_path / "bad.pth"
    bad_ckpt.write_bytes(b"not a checkpoint")
    cfg = _cfg(tmp_path, "model.max_detections_per_image=100", f"train.init_checkpoint={bad_ckpt}")
    cfg.train.output_dir = str(blocker / "out")
    problems = _problems(cfg)
    assert len(problems) == 3, problems
    assert (
        "model.max_detections_per_image=100 but dataloader.evaluator.max_dets_per_image=300"
        in (problems[0])
    )
    assert "is not writable" in problems[1]
    assert "bad.pth cannot be read" in problems[2]


def test_flags_after_overrides_and_config_paths_relative_to_configs():
    args = parse_args(
        ["--config-file", "mini_lvis/atss_efl_R18.py", "train.max_iter=2", "--resume"]
        + ["--num-gpus", "2", "train.seed=3"]
    )
    assert args.resume and args.num_gpus == 2
    assert args.opts == ["train.max_iter=2", "train.seed=3"]
    cfg = load_config(args)
    assert os.path.samefile(args.config_file, CONFIG)
    assert cfg.train.max_iter == 2 and cfg.train.seed == 3


def test_results_without_predictions_or_with_nan_ap_fail(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(RunFailed, match="received no predictions"):
        check_results(cfg, {})
    with pytest.raises(RunFailed, match=r"AP = nan for \['bbox'\]"):
        check_results(cfg, {"bbox": {"AP": math.nan, "APr": math.nan}})
    check_results(cfg, {"bbox": {"AP": 0.0, "APr": math.nan}})  # APr is nan without rare GT


def test_non_finite_box_deltas_are_a_divergence_not_a_bad_box():
    check_finite_box_deltas([torch.zeros(1, 3, 4)])
    with pytest.raises(FloatingPointError, match="Box regression outputs became infinite or NaN"):
        check_finite_box_deltas([torch.zeros(1, 3, 4), torch.tensor([[[0.0, math.inf, 0, 0]]])])


@pytest.mark.slow
def test_a_diverging_run_exits_non_zero_with_advice(tmp_path, env_with_datasets):
    proc = _train_net(
        [
            "--config-file",
            CONFIG,
            *SMALL,
            "optimizer.lr=1e6",
            "train.clip_grad=0",
            "train.max_iter=6",
            f"train.output_dir={tmp_path}",
        ],
        env_with_datasets,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: Training diverged" in proc.stderr
    assert "Lower optimizer.lr (now 1000000.0)" in proc.stderr
    assert "bad box" not in proc.stderr


@pytest.mark.slow
def test_an_evaluation_without_usable_predictions_exits_non_zero(tmp_path, env_with_datasets):
    from detectron2.config import instantiate

    model = instantiate(_cfg(tmp_path).model)
    state = model.state_dict()
    (key,) = [k for k in state if k.endswith("bbox_pred.bias")]
    state[key] = torch.full_like(state[key], math.nan)  # every predicted box is NaN
    weights = tmp_path / "nan_boxes.pth"
    torch.save({"model": state}, weights)
    proc = _train_net(
        ["--config-file", CONFIG, *SMALL, "--eval-only", f"train.init_checkpoint={weights}"]
        + [f"train.output_dir={tmp_path / 'ev'}"],
        env_with_datasets,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: Evaluation of " in proc.stderr and "nan_boxes.pth failed" in proc.stderr
    assert "Box regression outputs became infinite or NaN at inference" in proc.stderr
