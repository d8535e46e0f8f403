"""efl_d2.visualization (the one rule for which detections are drawn) and efl_d2._warnings."""

import warnings

import numpy as np
import pytest
import torch
from detectron2.data import Metadata
from detectron2.structures import Boxes, Instances

from efl_d2._warnings import ignore_third_party_deprecations
from efl_d2.visualization import (
    SCORE_FLOOR,
    SCORE_FRACTION,
    draw_predictions,
    score_threshold,
    threshold_rule,
)


def test_threshold_is_half_the_top_score_with_a_floor():
    assert (SCORE_FRACTION, SCORE_FLOOR) == (0.5, 0.05)
    assert score_threshold(torch.tensor([0.8, 0.5, 0.3, 0.02])) == pytest.approx(0.4)
    assert score_threshold(torch.tensor([0.06, 0.01])) == SCORE_FLOOR  # 0.03 < floor
    assert score_threshold(torch.zeros(0)) == SCORE_FLOOR
    assert score_threshold(torch.tensor([0.9]), fixed=0.3) == 0.3
    assert "0.5 x the image's top score" in threshold_rule() and "0.05" in threshold_rule()
    assert threshold_rule(0.3) == "score >= 0.3 (fixed)"


def _detections(scores):
    """Three well-separated 20x20 boxes on a 120x200 image, with the given scores."""
    inst = Instances((120, 200))
    inst.pred_boxes = Boxes(
        torch.tensor([[10.0, 50, 30, 70], [80, 50, 100, 70], [150, 50, 170, 70]])
    )
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor([0, 1, 2])
    return inst


def _changed(drawn, original, box):
    """Whether the pixels of ``box``'s outline changed (a box drawn there)."""
    x0, y0, x1, y1 = box
    ring = np.zeros(original.shape[:2], bool)
    ring[y0 - 1 : y1 + 2, x0 - 1 : x1 + 2] = True
    ring[y0 + 2 : y1 - 1, x0 + 2 : x1 - 1] = False
    return np.abs(drawn.astype(int) - original.astype(int))[ring].sum() > 0


@pytest.mark.parametrize(
    ("fixed", "expected"), [(None, [True, True, False]), (0.75, [True, False, False])]
)
def test_draw_predictions_draws_exactly_the_boxes_above_the_threshold(fixed, expected):
    image = np.full((120, 200, 3), 128, np.uint8)
    metadata = Metadata(name="_test_vis", thing_classes=["a", "b", "c"])
    drawn, thresh, num_drawn = draw_predictions(
        image, _detections([0.8, 0.45, 0.3]), metadata, fixed_threshold=fixed
    )
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert thresh == pytest.approx(0.4 if fixed is None else fixed)
    assert num_drawn == sum(expected)
    boxes = [(10, 50, 30, 70), (80, 50, 100, 70), (150, 50, 170, 70)]
    assert [_changed(drawn, image, b) for b in boxes] == expected
    # the caption (threshold) is written in the top-left corner
    assert np.abs(drawn[:12, :60].astype(int) - 128).sum() > 0


def _shown(message, category, module):
    """Whether a warning issued from ``module`` passes efl_d2's filters (pytest resets the
    filters that ``import efl_d2`` installed, so they are installed again here)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ignore_third_party_deprecations()  # in front of "always"
        warnings.warn_explicit(message, category, module.replace(".", "/") + ".py", 1, module)
    return len(caught) == 1


def test_only_the_named_third_party_deprecations_are_silenced():
    jit = "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."
    pkg = "pkg_resources is deprecated as an API. See https://setuptools.pypa.io/en/latest/"
    mesh = (
        "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument."
    )
    assert not _shown(jit, FutureWarning, "torch.jit._script")
    assert not _shown(pkg, UserWarning, "detectron2.config.lazy")
    assert not _shown(pkg, UserWarning, "detectron2.model_zoo.model_zoo")
    assert not _shown(mesh, UserWarning, "torch.functional")
    # the same messages from efl_d2, other warnings of those modules, efl_d2's own: still shown
    assert _shown(jit, FutureWarning, "efl_d2.modeling.atss")
    assert _shown(mesh, UserWarning, "efl_d2.modeling.atss")
    assert _shown("something else is deprecated", FutureWarning, "torch.jit._script")
    assert _shown(pkg, DeprecationWarning, "detectron2.config.lazy")
    assert _shown("EFL: g_j is not finite", UserWarning, "efl_d2.losses.focal_losses")
