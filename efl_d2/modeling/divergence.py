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
    """Raise ``FloatingPointError`` if any predicted box delta is inf / NaN.

    Does nothing while tracing: a traced graph keeps no Python branch on data (the check would
    be frozen at the example's outcome), so an exported model returns the boxes as computed.

    Args:
        pred_deltas: per level, (N, A_l, 4) or the head's raw (N, A * 4, H, W) maps.
    """
    if torch.jit.is_tracing():
        return
    if all(bool(torch.isfinite(d).all()) for d in pred_deltas):
        return
    try:
        where = f" at iteration {get_event_storage().iter}"
    except AssertionError:  # outside a training loop (inference): no event storage
        where = " at inference"
    raise FloatingPointError(
        f"Box regression outputs became infinite or NaN{where}: the weights diverged (or the "
        "checkpoint holds non-finite values)"
    )
