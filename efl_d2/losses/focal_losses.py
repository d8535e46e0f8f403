"""Sigmoid focal loss, Equalized Focal Loss (+ its ablations) and "EQLv2 & Focal".

All three are thin parametrisations of one kernel (:func:`focal_family_loss`); the two
gradient-guided ones share the statistics component :class:`GradientStatistics`. They are called
by the detector as ``loss = criterion(logits, gt_classes, normalizer)`` with Detectron2's label
convention (``0..C-1`` foreground, ``C`` background, ``-1`` ignored).
"""

from __future__ import annotations

import torch
from torch import nn

from .eqlv2 import eqlv2_weights
from .focal_kernel import focal_family_loss
from .grad_stats import GradientStatistics

__all__ = ["EQLv2FocalLoss", "EqualizedFocalLoss", "SigmoidFocalLoss", "efl_focusing_factor"]


def _check_inputs(
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    normalizer: float | torch.Tensor,
    num_classes: int,
    owner: str,
) -> float:
    """Validate the call and return the normaliser as a Python float."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(
            f"{owner}: logits must be a float tensor of shape (N, num_classes={num_classes}), "
            f"got {getattr(logits, 'dtype', type(logits))} {tuple(getattr(logits, 'shape', ()))}"
        )
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"{owner}: logits have {logits.shape[1]} classes but the loss was built with "
            f"num_classes={num_classes}; pass the number of foreground classes (background has "
            "no logit)"
        )
    if not isinstance(gt_classes, torch.Tensor) or gt_classes.shape != logits.shape[:1]:
        raise ValueError(
            f"{owner}: gt_classes must have shape ({logits.shape[0]},) to match the logits, got "
            f"{tuple(getattr(gt_classes, 'shape', ()))}"
        )
    if gt_classes.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{owner}: gt_classes must be an integer tensor, got {gt_classes.dtype}")
    if gt_classes.device != logits.device:
        raise ValueError(
            f"{owner}: gt_classes is on {gt_classes.device} but logits are on {logits.device}"
        )
    if gt_classes.numel():
        lo, hi = (int(v) for v in torch.aminmax(gt_classes.long()))  # one host sync
        if lo < -1 or hi > num_classes:
            raise ValueError(
                f"{owner}: gt_classes must be in [-1, {num_classes}] (-1 ignored, {num_classes} "
                f"background), got values in [{lo}, {hi}]"
            )
    if isinstance(normalizer, torch.Tensor):
        if normalizer.numel() != 1:
            raise ValueError(f"{owner}: normalizer must be a scalar, got shape {normalizer.shape}")
        normalizer = normalizer.detach().item()
    normalizer = float(normalizer)
    if not (normalizer > 0 and normalizer < float("inf")):
        raise ValueError(f"{owner}: normalizer must be positive and finite, got {normalizer}")
    return normalizer


def _alpha_weights(alpha: float, num_classes: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    # torchvision convention: alpha < 0 disables the alpha-balancing.
    if alpha < 0:
        return torch.ones(num_classes, device=device), torch.ones(num_classes, device=device)
    return (
        torch.full((num_classes,), alpha, device=device),
        torch.full((num_classes,), 1.0 - alpha, device=device),
    )


def _check_alpha(alpha: float) -> None:
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative to disable it), got {alpha}")


def efl_focusing_factor(g, *, gamma_b: float, scale: float):
    """EFL's focusing factor gamma_j = gamma_b + scale * (1 - g_j) (paper Eq. 3) of the gradient
    ratios ``g`` (tensor or array, any shape); the weighting factor is gamma_j / gamma_b."""
    return gamma_b + scale * (1.0 - g)


class _FocalFamilyForward:
    """The ``forward`` shared by the losses below: validate the call, commit pending statistics
    (losses with :class:`GradientStatistics`), then run the one kernel with the per-class
    parameters that the loss's ``element_parameters`` gives."""

    num_classes: int

    def element_parameters(
        self, device: torch.device
    ) -> tuple[float | torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gamma: float or (C,), pos_weight (C,), neg_weight (C,)) for the next forward."""
        raise NotImplementedError

    def forward(
        self,
        logits: torch.Tensor,
        gt_classes: torch.Tensor,
        normalizer: float | torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            logits: (N, C) classification logits, any float dtype (half/bf16 computed in fp32).
            gt_classes: (N,) integer labels: ``0..C-1`` foreground, ``C`` background, -1 ignored.
            normalizer: positive float or 0-dim tensor (e.g. the number of positive anchors).

        Returns:
            0-dim float32 loss (float64 for float64 logits).
        """
        norm = _check_inputs(logits, gt_classes, normalizer, self.num_classes, type(self).__name__)
        sink = None
        if isinstance(self, GradientStatistics):
            self._begin_forward()  # distributed: commit the previous step before reading g
            sink = self if self._collects(logits) else None
        gamma, pos_w, neg_w = self.element_parameters(logits.device)
        return focal_family_loss(
            logits,
            gt_classes.long(),
            gamma=gamma,
            pos_weight=pos_w,
            neg_weight=neg_w,
            normalizer=norm,
            statistics=sink,
        )


class SigmoidFocalLoss(_FocalFamilyForward, nn.Module):
    """Sigmoid focal loss (Lin et al.), summed and divided by ``normalizer``; no statistics.

    Equal to ``torchvision.ops.sigmoid_focal_loss(x, one_hot, alpha, gamma, "sum") / normalizer``
    with background and ignored rows handled like :class:`EqualizedFocalLoss`.
    """

    def __init__(self, num_classes: int, *, gamma: float = 2.0, alpha: float = 0.25):
        super().__init__()
        _check_alpha(alpha)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def element_parameters(self, device):
        return (self.gamma, *_alpha_weights(self.alpha, self.num_classes, device))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, alpha={self.alpha}"


class EqualizedFocalLoss(_FocalFamilyForward, GradientStatistics):
    """Equalized Focal Loss (paper Eq. 4) and its Table 3 ablations.

    With ``g_j`` = :attr:`pos_neg` (accumulated gradient ratio, clamped to [0, 1]):

        gamma_j = gamma_b + scale * (1 - g_j)           (focusing factor, if ``focusing_factor``)
        w_j     = (gamma_b + scale * (1 - g_j)) / gamma_b  (weighting factor, if ``weighting_factor``)
        loss    = sum_ij alpha_t * w_j * (1 - p_t)^gamma_j * (-log p_t) / normalizer

    ``w_j`` multiplies positive and negative elements of class j alike. Without the focusing
    factor every class uses ``gamma_b``; without the weighting factor ``w_j = 1``. With
    ``scale=0`` (or both flags off) this is exactly the sigmoid focal loss. ``g`` starts at 1, so
    the first iteration is plain focal loss; the statistics are updated after each training step
    (see :mod:`efl_d2.losses.grad_stats`).
    """

    focal_when_saturated = True  # g_j = 1: gamma_j = gamma_b and w_j = 1, the focal loss

    def __init__(
        self,
        num_classes: int,
        *,
        gamma_b: float = 2.0,
        scale: float = 8.0,
        alpha: float = 0.25,
        focusing_factor: bool = True,
        weighting_factor: bool = True,
    ):
        super().__init__(num_classes)
        _check_alpha(alpha)
        if gamma_b <= 0:
            raise ValueError(
                f"gamma_b must be > 0 (it divides the weighting factor), got {gamma_b}"
            )
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.gamma_b = float(gamma_b)
        self.scale = float(scale)
        self.alpha = float(alpha)
        self.focusing_factor = bool(focusing_factor)
        self.weighting_factor = bool(weighting_factor)

    def category_gamma(self) -> torch.Tensor:
        """:func:`efl_focusing_factor` of the current g_j, shape (C,)."""
        return efl_focusing_factor(self.pos_neg, gamma_b=self.gamma_b, scale=self.scale)

    def effective_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (C,) focusing exponents and weighting factors the next forward will use."""
        gamma_j = self.category_gamma()
        gamma = gamma_j if self.focusing_factor else torch.full_like(gamma_j, self.gamma_b)
        weight = gamma_j / self.gamma_b if self.weighting_factor else torch.ones_like(gamma_j)
        return gamma, weight

    def element_parameters(self, device):
        pos_w, neg_w = _alpha_weights(self.alpha, self.num_classes, device)
        gamma: float | torch.Tensor = self.gamma_b
        if self.scale > 0 and (self.focusing_factor or self.weighting_factor):
            gamma_j, weight = self.effective_parameters()
            if self.focusing_factor:
                gamma = gamma_j
            if self.weighting_factor:
                pos_w, neg_w = pos_w * weight, neg_w * weight
        return gamma, pos_w, neg_w

    def category_statistics(self) -> dict[str, torch.Tensor]:
        gamma, weight = self.effective_parameters()
        return {"g": self.pos_neg.detach().clone(), "gamma": gamma, "weight": weight}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, gamma_b={self.gamma_b}, scale={self.scale}, "
            f"alpha={self.alpha}, focusing_factor={self.focusing_factor}, "
            f"weighting_factor={self.weighting_factor}"
        )


class EQLv2FocalLoss(_FocalFamilyForward, GradientStatistics):
    """The paper's "EQLv2 & Focal" baseline (Table 1): focal loss times EQLv2 weights.

    With the unclamped ratio ``g_j = pos_grad_j / (neg_grad_j + 1e-10)`` of the shared statistics
    and ``f(x) = 1 / (1 + exp(-eqlv2_gamma * (x - mu)))``, each element of class j is weighted by
    ``1 + eqlv2_alpha * (1 - f(g_j))`` if positive and ``f(g_j)`` if negative, on top of the focal
    loss's own ``alpha_t``. The statistics are |dL/dx| of this weighted loss.

    Initialisation: EQLv2 starts its ratio buffer at 100 so that ``f`` is 1 (to fp32 precision)
    until the first update overwrites it. Here there is no second buffer: a class that has
    accumulated no gradient at all (``pos_grad == neg_grad == 0``, i.e. before any update) has no
    evidence of imbalance and gets ``g = +inf``, so ``f = 1`` and both weights are exactly 1. From
    the first update on every class has a finite ratio, exactly as in EQLv2.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        gamma: float = 2.0,
        alpha: float = 0.25,
        eqlv2_gamma: float = 12.0,
        mu: float = 0.8,
        eqlv2_alpha: float = 4.0,
    ):
        super().__init__(num_classes)
        _check_alpha(alpha)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.eqlv2_gamma = float(eqlv2_gamma)
        self.mu = float(mu)
        self.eqlv2_alpha = float(eqlv2_alpha)

    def eqlv2_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive weights, negative weights), each (C,), from the current statistics."""
        return eqlv2_weights(
            self.pos_grad, self.neg_grad, gamma=self.eqlv2_gamma, mu=self.mu, alpha=self.eqlv2_alpha
        )

    def element_parameters(self, device):
        pos_a, neg_a = _alpha_weights(self.alpha, self.num_classes, device)
        pos_q, neg_r = self.eqlv2_weights()
        return self.gamma, pos_a * pos_q, neg_a * neg_r

    def category_statistics(self) -> dict[str, torch.Tensor]:
        pos_w, neg_w = self.eqlv2_weights()
        return {"g": self.pos_neg.detach().clone(), "pos_weight": pos_w, "neg_weight": neg_w}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, gamma={self.gamma}, alpha={self.alpha}, "
            f"eqlv2_gamma={self.eqlv2_gamma}, mu={self.mu}, eqlv2_alpha={self.eqlv2_alpha}"
        )
