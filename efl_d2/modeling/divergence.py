"""Fail a diverged training step with a message that says so.

When the weights blow up, the box deltas become inf / NaN first; detectron2's box losses then stop
on ``assert (x2 >= x1).all(), "bad box"``, which reads like a data problem. Checking the deltas
first raises the same ``FloatingPointError`` that detectron2 raises for a non-finite loss, which
``tools/train_net.py`` reports as a diverged run.
"""

import torch
from detectron2.utils.events import get_event_storage
from torch import Tensor

__all__ = ["check_finite_box_deltas"]


def check_finite_box_deltas(pred_deltas: list[Tensor]) -> None:
    """Raise ``FloatingPointError`` if any predicted box delta (L tensors (N, A_l, 4)) is inf/NaN."""
    if all(bool(torch.isfinite(d).all()) for d in pred_deltas):
        return
    try:
        where = f" at iteration {get_event_storage().iter}"
    except AssertionError:  # outside a training loop: no event storage
        where = ""
    raise FloatingPointError(
        f"Box regression outputs became infinite or NaN{where}: the weights diverged"
    )
