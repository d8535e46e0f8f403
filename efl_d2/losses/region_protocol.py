"""The two calling conventions of efl_d2's classification losses.

Dense losses (one-stage detectors: ATSS, PAA, PluggableRetinaNet, PluggableFCOS), the focal family
of ``focal_losses.py``::

    loss = cls_loss(logits (N, C), gt_classes (N,), normalizer)

- logits: one sigmoid logit per foreground class, no background logit;
- gt_classes: 0..C-1 foreground, C background, -1 ignored (no loss, no statistics);
- normalizer: chosen by the detector (the number of positive anchors); the result is the sum over
  non-ignored anchors divided by it.

Region losses (two-stage detectors: the box classifier of Faster R-CNN,
:class:`efl_d2.modeling.PluggableFastRCNNOutputLayers`)::

    loss = cls_loss(logits (R, cls_loss.num_logits), gt_classes (R,))   # tensor or dict of them
    scores = cls_loss.probabilities(logits)                               # (R, C + 1)

- logits: ``num_logits`` columns per sampled RoI: C + 1 (the last one background; softmax or
  sigmoid per column as the loss says: EQLv2), C (sigmoid, no background logit: EQL), C + 2
  (Seesaw: C class logits, then 2 objectness logits) or C + 2 + G (BAGS: a softmax per group);
- gt_classes: 0..C-1 foreground, C background (Detectron2's ROI-head labels; no ignored RoIs);
- normalizer: applied by the loss as its authors do: the number R of sampled RoIs of the call
  (EQL, EQLv2, Seesaw), or per term the RoIs it uses (BAGS's groups); a loss returning a dict
  returns terms that are summed into the total;
- probabilities: the test-time class scores, background last, as Detectron2's
  ``FastRCNNOutputLayers.predict_probs`` returns them.

Losses that keep per-class gradient statistics (EFL, EQLv2&Focal, EQLv2) subclass
:class:`~efl_d2.losses.GradientStatistics`; their buffers are checkpointed, all-reduced across
processes and logged without further code. Seesaw keeps class counts instead (a plain buffer,
local to each process, as its authors). LazyConfig finds a loss by import path
(``L(EQLv2Loss)(num_classes=...)``), yacs configs by name through ``CLS_LOSS_REGISTRY``.
"""

from __future__ import annotations

import torch

__all__ = ["check_region_inputs"]


def check_region_inputs(
    logits: torch.Tensor, gt_classes: torch.Tensor, num_classes: int, num_logits: int, owner: str
) -> None:
    """Validate a region-loss call (shapes, dtypes, label range), with a message naming
    ``owner``."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(
            f"{owner}: logits must be a float tensor of shape (R, {num_logits}), got "
            f"{getattr(logits, 'dtype', type(logits))} {tuple(getattr(logits, 'shape', ()))}"
        )
    if logits.shape[1] != num_logits:
        raise ValueError(
            f"{owner}: logits have {logits.shape[1]} columns, expected {num_logits} for "
            f"num_classes={num_classes} (the box predictor must be built with cls_loss.num_logits)"
        )
    if not isinstance(gt_classes, torch.Tensor) or gt_classes.shape != logits.shape[:1]:
        raise ValueError(
            f"{owner}: gt_classes must have shape ({logits.shape[0]},), got "
            f"{tuple(getattr(gt_classes, 'shape', ()))}"
        )
    if gt_classes.dtype.is_floating_point or gt_classes.dtype == torch.bool:
        raise ValueError(f"{owner}: gt_classes must be an integer tensor, got {gt_classes.dtype}")
    if gt_classes.numel():
        lo, hi = (int(v) for v in torch.aminmax(gt_classes.long()))
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"{owner}: gt_classes must be in [0, {num_classes}] ({num_classes} background), "
                f"got values in [{lo}, {hi}]"
            )
