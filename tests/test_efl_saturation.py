"""EFLStatsHook's saturation report: for how many classes EFL equals the focal loss (g_j = 1),
per frequency group, as scalars and a log line at each log period, and a one-time notice when
nearly all classes are there."""

import json
import logging
import os

import pytest
import torch
from _tiny_zoo import TINY_TRAIN_OVERRIDES, run_train_net
from detectron2.utils.events import EventStorage
from torch import nn

from efl_d2.engine.efl_stats_hook import SATURATION_NOTICE_SHARE, EFLStatsHook
from efl_d2.losses import EQLv2FocalLoss, EqualizedFocalLoss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = 10
FREQS = ["r", "r", "r", "c", "c", "c", "f", "f", "f", "f"]
GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
NOTICE = "now equals the focal loss for"


@pytest.fixture
def efl_log():
    """Records of the ``efl_d2`` logger hierarchy (INFO and up) during the test."""
    records = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    efl_logger = logging.getLogger("efl_d2")
    handler, level = _Keep(logging.INFO), efl_logger.level
    efl_logger.addHandler(handler)
    efl_logger.setLevel(logging.INFO)
    yield records
    efl_logger.removeHandler(handler)
    efl_logger.setLevel(level)


def _forced_sums(saturated: set[int], never_positive: frozenset[int] = frozenset({1})):
    """Per-class gradient sums, float64: ratio 2 for ``saturated`` classes, 0 (no positive
    gradient) for ``never_positive`` ones, 0.5 for the others."""
    neg = torch.linspace(1.0, 3.0, C, dtype=torch.float64)
    ratio = torch.tensor(
        [2.0 if j in saturated else 0.0 if j in never_positive else 0.5 for j in range(C)],
        dtype=torch.float64,
    )
    return ratio * neg, neg


def _force(loss: nn.Module, pos: torch.Tensor, neg: torch.Tensor) -> None:
    """Commit ``pos`` / ``neg`` as one training step's sums (the path a backward takes)."""
    loss.add_gradient_sums(pos.float(), neg.float(), torch.tensor(True))


def _expected_counts(pos, neg, freqs=FREQS):
    """{"": overall, "r": .., "c": .., "f": ..} saturated counts from the forced sums alone."""
    saturated = [bool(p / (n + 1e-10) >= 1.0) for p, n in zip(pos.tolist(), neg.tolist())]
    out = {"": sum(saturated)}
    for g in "rcf":
        out[g] = sum(s for s, f in zip(saturated, freqs) if f == g)
    return out


def _accumulated(first, then, switch, steps):
    """The (pos, neg) sums after ``steps`` steps: ``first`` for ``switch`` steps, then ``then``."""
    n_first, n_then = min(steps, switch), max(steps - switch, 0)
    return tuple(a * n_first + b * n_then for a, b in zip(first, then))


class _Model(nn.Module):
    def __init__(self, **losses):
        super().__init__()
        for name, loss in losses.items():
            setattr(self, name, loss)


class _FakeTrainer:
    """What the hook reads of a trainer: iter, max_iter, storage."""

    def __init__(self, max_iter):
        self.iter, self.max_iter = 0, max_iter
        self.storage = EventStorage(0)


def _drive(hook, trainer, iterations, between=None):
    """Run the hook's per-iteration callbacks for ``iterations``; ``between(it)`` before each."""
    hook.trainer = trainer
    for it in iterations:
        if between is not None:
            between(it)
        trainer.iter = trainer.storage.iter = it
        hook.after_backward()
        hook.after_step()


def _lines(records, level=logging.INFO):
    return [r.getMessage() for r in records if r.levelno == level]


def _notices(records):
    return [m for m in _lines(records, logging.WARNING) if NOTICE in m]


def test_counts_per_group_go_to_storage_and_log_line_each_period(efl_log):
    pos, neg = _forced_sums(saturated={0, 3, 4, 6, 7, 8, 9})
    model = _Model(cls_loss=EqualizedFocalLoss(C))
    _force(model.cls_loss, pos, neg)
    trainer = _FakeTrainer(max_iter=5)
    _drive(EFLStatsHook(model, class_frequencies=FREQS, period=2), trainer, range(5))

    expected = _expected_counts(pos, neg)
    assert expected == {"": 7, "r": 1, "c": 2, "f": 4}  # class 1 (never positive, g = 0) is out
    history = trainer.storage.histories()
    assert history["efl/focal_classes"].latest() == expected[""]
    for g in "rcf":
        assert history[f"efl/focal_classes_{g}"].latest() == expected[g], g
    # the same iterations as the other EFL scalars: every period and the last one
    assert [it for _, it in history["efl/focal_classes"].values()] == [1, 3, 4]
    assert [it for _, it in history["efl/g_r"].values()] == [1, 3, 4]

    sizes = {g: FREQS.count(g) for g in "rcf"}
    groups = ", ".join(f"{GROUP_NAMES[g]} {expected[g]}/{sizes[g]}" for g in "rcf")
    line = f"EFL equals the focal loss for {expected['']} of {C} classes (g_j = 1): {groups}"
    assert _lines(efl_log) == [f"iter {it}: {line}" for it in (1, 3, 4)]
    assert _notices(efl_log) == []  # 7 of 10 is below "nearly all"


def test_notice_once_when_nearly_all_saturate(efl_log):
    assert SATURATION_NOTICE_SHARE == 0.9
    model = _Model(cls_loss=EqualizedFocalLoss(C))
    below = _forced_sums(saturated=set(range(C)) - {1, 2})  # 8 of 10
    at = _forced_sums(saturated=set(range(C)) - {1})  # 9 of 10: exactly 90%
    assert _expected_counts(*below)[""] == 8 and _expected_counts(*at)[""] == 9

    def step(it):
        # 8 of 10 for the first 3 steps, then sums with 9 of 10; class 2 (ratio 0.5, then 2)
        # crosses 1 once its later sums outweigh the earlier ones
        _force(model.cls_loss, *(below if it < 3 else at))

    trainer = _FakeTrainer(max_iter=12)
    _drive(EFLStatsHook(model, class_frequencies=FREQS, period=2), trainer, range(12), step)

    counts = [v for v, _ in trainer.storage.histories()["efl/focal_classes"].values()]
    expected = [_expected_counts(*_accumulated(below, at, 3, n))[""] for n in (2, 4, 6, 8, 10, 12)]
    assert counts == expected == [8, 8, 9, 9, 9, 9]
    notices = _notices(efl_log)
    assert len(notices) == 1  # once, though later periods stay at 9 of 10
    # logged right after the line of the first period at 9 of 10 (iteration 5)
    messages = [r.getMessage() for r in efl_log]
    assert messages[messages.index(notices[0]) - 1].startswith(
        "iter 5: EFL equals the focal loss for 9 "
    )
    assert notices[0].startswith(f"EFL {NOTICE} 9 of 10 classes (at least 90%)")
    for words in ("rebalancing is inactive", "not long-tailed", "class frequencies"):
        assert words in notices[0], words
    assert "efl/focal_classes and efl/focal_classes_{r,c,f} in metrics.json" in notices[0]
    assert "github" not in notices[0].lower() and "issue" not in notices[0].lower()
    assert len(_lines(efl_log)) == 6  # and the count line at every period still


def test_no_notice_below_the_threshold(efl_log):
    model = _Model(cls_loss=EqualizedFocalLoss(C))
    _force(model.cls_loss, *_forced_sums(saturated=set(range(C)) - {1, 2}))  # 8 of 10
    _drive(EFLStatsHook(model, class_frequencies=FREQS, period=1), _FakeTrainer(6), range(6))
    assert len(_lines(efl_log)) == 6
    assert all("for 8 of 10 classes" in m for m in _lines(efl_log))
    assert _notices(efl_log) == []


def test_nothing_reported_before_statistics_exist(efl_log):
    """g starts at 1 for every class: that is not saturation. The report starts with the first
    committed statistics."""
    model = _Model(cls_loss=EqualizedFocalLoss(C))
    trainer = _FakeTrainer(max_iter=6)
    hook = EFLStatsHook(model, class_frequencies=FREQS, period=1)
    _drive(hook, trainer, range(3))
    assert torch.equal(model.cls_loss.pos_neg, torch.ones(C))
    history = trainer.storage.histories()
    assert "efl/g_mean" in history  # the group means are logged as before ...
    assert not any(k.startswith("efl/focal_classes") for k in history)  # ... but no count
    assert efl_log == []

    pos, neg = _forced_sums(saturated=set(range(C)) - {1})  # all but class 1 (never positive)
    _force(model.cls_loss, pos, neg)
    _drive(hook, trainer, range(3, 6))
    assert trainer.storage.histories()["efl/focal_classes"].latest() == 9
    assert len(_lines(efl_log)) == 3 and len(_notices(efl_log)) == 1


def test_only_efl_like_losses_report_and_several_get_their_prefix(efl_log):
    """EQLv2&Focal weights use the unclamped ratio: g_j = 1 does not make it the focal loss, so it
    gets no count; with several statistics losses the EFL one's keys carry its module path."""
    pos, neg = _forced_sums(saturated={0, 5})
    all_pos, all_neg = _forced_sums(saturated=set(range(C)) - {1})
    model = _Model(cls_loss=EqualizedFocalLoss(C), aux_loss=EQLv2FocalLoss(C))
    _force(model.cls_loss, pos, neg)
    _force(model.aux_loss, all_pos, all_neg)
    assert model.aux_loss.saturated_classes().sum() == 9  # its g is 1 for 9 classes ...
    trainer = _FakeTrainer(max_iter=2)
    _drive(EFLStatsHook(model, class_frequencies=None, period=1), trainer, range(2))

    history = trainer.storage.histories()
    focal_keys = {k for k in history if "focal_classes" in k}
    assert focal_keys == {"efl/cls_loss/focal_classes"}  # ... yet only EFL is counted
    assert history["efl/cls_loss/focal_classes"].latest() == _expected_counts(pos, neg)[""] == 2
    # without class frequencies: the overall count only
    assert _lines(efl_log) == [
        f"iter {it}: EFL (cls_loss) equals the focal loss for 2 of {C} classes (g_j = 1)"
        for it in (0, 1)
    ]


@pytest.mark.slow
def test_short_mini_lvis_run_logs_the_counts_and_the_notice(tmp_path, env_with_datasets):
    """A 20-iteration ATSS + EFL run on the session's 10-class mini-LVIS: g_j reaches 1 for 9 of
    10 classes after ~14 iterations (measured: 3 of 10 after the first step), so the run's log has
    the count line at every iteration and the notice once; the last count is the one the final
    checkpoint's statistics give."""
    out = tmp_path / "run"
    args = [
        "--config-file",
        os.path.join(REPO, "configs/mini_lvis/atss_efl_R18.py"),
        *TINY_TRAIN_OVERRIDES,
        "train.max_iter=20",
        "train.log_period=1",
        "train.vis_images=0",
        f"train.output_dir={out}",
    ]
    proc = run_train_net(args, env_with_datasets)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    log = (out / "log.txt").read_text()
    lines = [ln for ln in log.splitlines() if "EFL equals the focal loss for" in ln]
    assert [ln.split("iter ")[1].split(":")[0] for ln in lines] == [str(i) for i in range(20)]
    assert log.count(NOTICE) == 1

    metrics = [json.loads(ln) for ln in (out / "metrics.json").read_text().splitlines()]
    counts = [m["efl/focal_classes"] for m in metrics if "efl/focal_classes" in m]
    assert len(counts) == 20
    assert max(counts) >= 9 and counts[0] < 9  # the notice came during the run
    # the last count, recomputed from the final checkpoint's buffers and the json's groups
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    (prefix,) = [k[: -len("pos_grad")] for k in state if k.endswith("pos_grad")]
    pos, neg = state[prefix + "pos_grad"].double(), state[prefix + "neg_grad"].double()
    train_json = os.path.join(
        env_with_datasets["DETECTRON2_DATASETS"], "lvis", "mini_lvis_v1_train.json"
    )
    with open(train_json) as f:
        cats = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    expected = _expected_counts(pos, neg, [c["frequency"] for c in cats])
    last = next(m for m in reversed(metrics) if "efl/focal_classes" in m)
    assert last["efl/focal_classes"] == expected[""]
    for g in "rcf":
        assert last[f"efl/focal_classes_{g}"] == expected[g], g
