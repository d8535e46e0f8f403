"""Equalization loss (EQL, Tan et al. 2020) for a two-stage box classifier, as its authors'
Detectron2 implementation: C sigmoid logits (no background logit; the classifier's bias starts at
the prior 0.001), and for RoI i and class j

    w_ij = 1 - E_i * T_j * (1 - y_ij),     E_i = [RoI i is foreground],  T_j = [f_j < lambda]
    loss = sum_ij w_ij * BCE(z_ij, y_ij) / R

where f_j is the fraction of training images (with at least one annotation) that contain class j:
a foreground RoI does not push down the logits of rare classes other than its own; background RoIs
get the full loss on every class. LVIS v1: lambda = 0.0011 (v0.5: 0.00177). Test scores: the
sigmoid of each class (the background score is 0).
Compared side by side with the authors' code: docs/two_stage_methods.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .region_protocol import check_region_inputs

__all__ = ["EQLLoss"]


class EQLLoss(nn.Module):
    """EQL (region-loss protocol, see ``region_protocol.py``; ``num_logits`` = C).

    Args:
        num_classes: C.
        image_frequencies: (C,) f_j by contiguous class id, e.g.
            :func:`efl_d2.data.category_image_frequencies`.
        lambda_: the frequency threshold below which a class is "tail" (T_j = 1).
    """

    def __init__(self, num_classes: int, *, image_frequencies: Sequence[float], lambda_: float):
        super().__init__()
        freq = torch.as_tensor(list(image_frequencies), dtype=torch.float64)
        if freq.shape != (num_classes,):
            raise ValueError(
                f"EQLLoss: image_frequencies has {freq.numel()} entries, expected num_classes="
                f"{num_classes}"
            )
        if not ((freq >= 0) & (freq <= 1)).all():
            raise ValueError("EQLLoss: image_frequencies must be fractions in [0, 1]")
        self.num_classes = int(num_classes)
        self.num_logits = self.num_classes
        self.lambda_ = float(lambda_)
        # compared in float32, as the authors' code stores and compares the frequencies
        tail = freq.float() < torch.tensor(self.lambda_, dtype=torch.float32)
        self.register_buffer("tail", tail.float(), persistent=False)

    def forward(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (R, C).
            gt_classes: (R,) int, 0..C-1 foreground, C background.
        """
        check_region_inputs(logits, gt_classes, self.num_classes, self.num_logits, "EQLLoss")
        x = logits.float() if logits.dtype != torch.float64 else logits
        y = F.one_hot(gt_classes.long(), self.num_classes + 1)[:, : self.num_classes].to(x.dtype)
        foreground = (gt_classes < self.num_classes).to(x.dtype)[:, None]
        w = 1 - foreground * self.tail.to(x) * (1 - y)
        loss = F.binary_cross_entropy_with_logits(x, y, weight=w, reduction="sum")
        return loss / max(x.shape[0], 1)

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(R, C + 1): the sigmoid of each class, then 0 for background."""
        p = torch.sigmoid(logits.float())
        return torch.cat([p, p.new_zeros(p.shape[0], 1)], dim=1)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, lambda_={self.lambda_}, "
            f"tail_classes={int(self.tail.sum())}"
        )
