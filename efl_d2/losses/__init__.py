"""Classification losses for long-tailed detection.

Dense (one-stage detectors), the sigmoid focal family, called as
``loss = criterion(logits (N, C), gt_classes (N,), normalizer)``:

- :class:`SigmoidFocalLoss`: plain focal loss.
- :class:`EqualizedFocalLoss`: EFL (CVPR 2022) and its focusing-/weighting-factor ablations.
- :class:`EQLv2FocalLoss`: the paper's "EQLv2 & Focal" baseline.

They share one fused kernel (:func:`focal_family_loss`). Region losses (the box classifier of a
two-stage detector), called as ``criterion(logits (R, num_logits), gt_classes (R,))``:

- :class:`EQLLoss`: EQL (Tan et al. 2020);
- :class:`EQLv2Loss`: EQLv2 (Tan et al. 2021);
- :class:`SeesawLoss`: Seesaw loss (Wang et al. 2021);
- :class:`BalancedGroupSoftmaxLoss`: BAGS (Li et al. 2020), decoupled training's second stage.

Both conventions are written out in ``region_protocol.py``. The gradient-guided losses share the
statistics component :class:`GradientStatistics`.
"""

from .bags import BalancedGroupSoftmaxLoss
from .eql import EQLLoss
from .eqlv2 import EQLv2Loss, eqlv2_weights
from .focal_kernel import focal_family_loss
from .focal_losses import (
    EQLv2FocalLoss,
    EqualizedFocalLoss,
    SigmoidFocalLoss,
    efl_focusing_factor,
)
from .grad_stats import GradientSink, GradientStatistics
from .observability import put_category_statistics, summarize_category_statistics
from .seesaw import SeesawLoss

__all__ = [
    "BalancedGroupSoftmaxLoss",
    "EQLLoss",
    "EQLv2FocalLoss",
    "EQLv2Loss",
    "EqualizedFocalLoss",
    "GradientSink",
    "GradientStatistics",
    "SeesawLoss",
    "SigmoidFocalLoss",
    "efl_focusing_factor",
    "eqlv2_weights",
    "focal_family_loss",
    "put_category_statistics",
    "summarize_category_statistics",
]
