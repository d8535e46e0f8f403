"""EQLv2 (Tan et al. 2021, "Equalization Loss v2"): the gradient-guided re-weighting, and the
loss of its two-stage detector (the box classifier of Faster R-CNN).

The mapping, used both here and by the dense "EQLv2 & Focal" loss:

    f(g) = 1 / (1 + exp(-gamma * (g - mu)))          g_j = pos_grad_j / (neg_grad_j + 1e-10)
    negative weight r_j = f(g_j),   positive weight q_j = 1 + alpha * (1 - f(g_j))

with the authors' constants gamma = 12, mu = 0.8, alpha = 4 (their ``eqlv2.py``). The ratio is not
clamped.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .grad_stats import GradientStatistics
from .region_protocol import check_region_inputs

__all__ = ["EQLv2Loss", "eqlv2_weights"]


def eqlv2_weights(
    pos_grad: torch.Tensor,
    neg_grad: torch.Tensor,
    *,
    gamma: float = 12.0,
    mu: float = 0.8,
    alpha: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive weights q, negative weights r), each (C,), from accumulated gradient sums (C,).

    A class with no accumulated gradient at all (before the first update) gets f = 1, so both
    weights are exactly 1: EQLv2 starts its ratio buffer at 100 for the same effect (f(100) is 1
    in float32), and from the first update on, both agree.
    """
    ratio = pos_grad / (neg_grad + 1e-10)
    f = torch.sigmoid(gamma * (ratio - mu))
    f = torch.where((pos_grad == 0) & (neg_grad == 0), torch.ones_like(f), f)
    return 1.0 + alpha * (1.0 - f), f


class EQLv2Loss(GradientStatistics):
    """EQLv2 for a two-stage box classifier (region-loss protocol, see ``region_protocol.py``).

    Logits (R, C + 1), sigmoid per column, the last column background; labels 0..C-1 foreground,
    C background (its row's target is 1 in the background column). With the weights of
    :func:`eqlv2_weights` for the C foreground columns and 1 for the background column,

        loss = sum_ij w_ij * BCE(z_ij, y_ij) / R,     w_ij = q_j y_ij + r_j (1 - y_ij)

    Statistics, as the authors collect them (analytically, from the same weights, foreground
    columns only, **without** the 1 / R): pos_grad_j += sum_i |p_ij - y_ij| y_ij w_ij and
    neg_grad_j += sum_i |p_ij - y_ij| (1 - y_ij) w_ij; all-reduced over processes, never reset. The
    next forward uses them. Test scores: sigmoid(z_j) * (1 - sigmoid(z_C)) for j < C.

    The buffer ``pos_neg`` is the ratio clamped to [0, 1], as for every
    :class:`GradientStatistics` loss (the authors' buffer of that name is unclamped); the weights
    use the unclamped ratio of ``pos_grad`` and ``neg_grad``. Compared side by side with the
    authors' ``eqlv2.py`` over 6 iterations: loss, gradient and buffers equal to float32 rounding.
    """

    def __init__(
        self, num_classes: int, *, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0
    ):
        super().__init__(num_classes)
        self.num_logits = self.num_classes + 1
        self.gamma, self.mu, self.alpha = float(gamma), float(mu), float(alpha)

    def class_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, r), each (C + 1,): the EQLv2 weights with 1 for the background column."""
        q, r = eqlv2_weights(
            self.pos_grad, self.neg_grad, gamma=self.gamma, mu=self.mu, alpha=self.alpha
        )
        one = q.new_ones(1)
        return torch.cat([q, one]), torch.cat([r, one])

    def forward(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (R, C + 1) box-classifier logits.
            gt_classes: (R,) int, 0..C-1 foreground, C background.

        Returns:
            0-dim loss (float32 or the logits' float64).
        """
        check_region_inputs(logits, gt_classes, self.num_classes, self.num_logits, "EQLv2Loss")
        self._begin_forward()  # distributed: commit the previous step before reading g
        q, r = (w.to(logits.device) for w in self.class_weights())
        x = logits.float() if logits.dtype != torch.float64 else logits
        y = F.one_hot(gt_classes.long(), self.num_logits).to(x.dtype)
        w = q * y + r * (1 - y)
        loss = F.binary_cross_entropy_with_logits(x, y, weight=w, reduction="sum")
        if self._collects(logits):
            with torch.no_grad():
                grad = (torch.sigmoid(x) - y).abs() * w
                pos = (grad * y).sum(0)[:-1]
                neg = (grad * (1 - y)).sum(0)[:-1]
                self.add_gradient_sums(
                    pos, neg, torch.isfinite(pos).all() & torch.isfinite(neg).all()
                )
        return loss / max(logits.shape[0], 1)

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(R, C + 1) test scores: sigmoid of each class times 1 - sigmoid(background)."""
        p = torch.sigmoid(logits.float())
        return torch.cat([p[:, :-1] * (1 - p[:, -1:]), p[:, -1:]], dim=1)

    def category_statistics(self) -> dict[str, torch.Tensor]:
        q, r = eqlv2_weights(
            self.pos_grad, self.neg_grad, gamma=self.gamma, mu=self.mu, alpha=self.alpha
        )
        return {"g": self.pos_neg.detach().clone(), "pos_weight": q, "neg_weight": r}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, gamma={self.gamma}, mu={self.mu}, alpha={self.alpha}"
        )
