"""The sigmoid focal-loss family for dense long-tailed detection.

- :class:`SigmoidFocalLoss`: plain focal loss.
- :class:`EqualizedFocalLoss`: EFL (CVPR 2022) and its focusing-/weighting-factor ablations.
- :class:`EQLv2FocalLoss`: the paper's "EQLv2 & Focal" baseline.

All share one fused kernel (:func:`focal_family_loss`); the gradient-guided ones share the
statistics component :class:`GradientStatistics`. Call them as
``loss = criterion(logits (N, C), gt_classes (N,), normalizer)``.
"""

from .focal_kernel import focal_family_loss
from .focal_losses import (
    EQLv2FocalLoss,
    EqualizedFocalLoss,
    SigmoidFocalLoss,
    efl_focusing_factor,
)
from .grad_stats import GradientSink, GradientStatistics
from .observability import (
    frequency_groups_from_lvis_categories,
    put_category_statistics,
    summarize_category_statistics,
)

__all__ = [
    "EQLv2FocalLoss",
    "EqualizedFocalLoss",
    "GradientSink",
    "GradientStatistics",
    "SigmoidFocalLoss",
    "efl_focusing_factor",
    "focal_family_loss",
    "frequency_groups_from_lvis_categories",
    "put_category_statistics",
    "summarize_category_statistics",
]
