"""Seesaw loss (Wang et al. 2021) for a two-stage box classifier, as its authors' mmdetection
implementation (``SeesawLoss``; LVIS recipe: p = 0.8, q = 2.0, eps = 1e-2, a normalised cosine
classifier of temperature 20, :class:`efl_d2.modeling.NormedLinear`).

Logits (R, C + 2): C class logits, then two objectness logits [foreground, background]. With
N_j the number of sampled RoIs of class j seen so far by this process (the current batch
included) and, for a foreground RoI of class i and any other class j,

    mitigation   M_ij = (N_j / N_i)^p  if N_j < N_i else 1        (N clamped to >= 1)
    compensation K_ij = (s_j / s_i)^q  if s_j > s_i else 1        (s = softmax of the detached
                                                                   class logits, s_i >= eps)
    loss_cls_classes_i = -log( e^{z_i} / (e^{z_i} + sum_{j != i} M_ij K_ij e^{z_j}) )

summed over foreground RoIs and divided by R (all sampled RoIs); the objectness term is a 2-way
softmax cross entropy (target foreground / background), averaged over the R RoIs. Test scores:
[softmax(class logits) * P(foreground), P(background)].
Compared side by side with the authors' code: docs/two_stage_methods.md.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .region_protocol import check_region_inputs

__all__ = ["SeesawLoss"]


class SeesawLoss(nn.Module):
    """Seesaw loss; returns ``{"loss_cls_classes", "loss_cls_objectness"}`` (region-loss
    protocol, see ``region_protocol.py``).

    Buffer ``cum_samples`` (C + 1,) float32: sampled RoIs per label (background last), counted
    before each training-mode loss; persistent (checkpointed), local to each process and never
    reset, as in the authors' code.
    """

    def __init__(self, num_classes: int, *, p: float = 0.8, q: float = 2.0, eps: float = 1e-2):
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if p < 0 or q < 0 or eps <= 0:
            raise ValueError(f"SeesawLoss needs p >= 0, q >= 0, eps > 0; got {p}, {q}, {eps}")
        self.num_classes = int(num_classes)
        self.num_logits = self.num_classes + 2
        self.p, self.q, self.eps = float(p), float(q), float(eps)
        self.register_buffer("cum_samples", torch.zeros(self.num_classes + 1))

    def seesaw_factors(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(F, C) factors S_ij = M_ij K_ij of foreground RoIs with ``labels`` (F,) in 0..C-1;
        S_ii = 1."""
        s = torch.ones_like(class_logits)
        if self.p > 0:
            counts = self.cum_samples[: self.num_classes].to(class_logits).clamp(min=1)
            ratio = counts[None, :] / counts[labels][:, None]
            s = s * torch.where(ratio < 1, ratio.pow(self.p), torch.ones_like(ratio))
        if self.q > 0:
            scores = F.softmax(class_logits.detach(), dim=1)
            own = scores.gather(1, labels[:, None]).clamp(min=self.eps)
            ratio = scores / own
            s = s * torch.where(ratio > 1, ratio.pow(self.q), torch.ones_like(ratio))
        return s.scatter(1, labels[:, None], 1.0)

    def forward(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            logits: (R, C + 2).
            gt_classes: (R,) int, 0..C-1 foreground, C background.
        """
        check_region_inputs(logits, gt_classes, self.num_classes, self.num_logits, "SeesawLoss")
        labels = gt_classes.long()
        if self.training:
            self.cum_samples += torch.bincount(labels, minlength=self.num_classes + 1).to(
                self.cum_samples
            )
        x = logits.float() if logits.dtype != torch.float64 else logits
        class_logits, obj_logits = x[:, : self.num_classes], x[:, self.num_classes :]
        fg = labels < self.num_classes
        n = max(x.shape[0], 1)
        fg_logits, fg_labels = class_logits[fg], labels[fg]
        adjusted = fg_logits + self.seesaw_factors(fg_logits, fg_labels).log()
        loss_classes = F.cross_entropy(adjusted, fg_labels, reduction="sum") / n
        loss_objectness = F.cross_entropy(obj_logits, (~fg).long(), reduction="sum") / n
        return {"loss_cls_classes": loss_classes, "loss_cls_objectness": loss_objectness}

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(R, C + 1): class softmax times P(foreground), then P(background)."""
        x = logits.float()
        classes = F.softmax(x[:, : self.num_classes], dim=1)
        obj = F.softmax(x[:, self.num_classes :], dim=1)
        return torch.cat([classes * obj[:, :1], obj[:, 1:]], dim=1)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, p={self.p}, q={self.q}, eps={self.eps}"
