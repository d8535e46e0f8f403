"""Balanced group softmax (BAGS, Li et al. 2020) for a two-stage box classifier, as its authors'
implementation: the classes are split into groups by their number of training instances
(bins (0, 10), [10, 100), [100, 1000), [1000, inf)), each group is a separate softmax over
["others", its classes], and a background group is a 2-way softmax [background, foreground].

Logits (R, C + 2 + G) for G non-empty class groups: [bg, fg], then per group [others, its classes
in class-id order]. Training (RoI label i, background = C):

    background group: cross entropy of [bg, fg] over all R RoIs, averaged over R;
    group g: cross entropy over the RoIs of its classes (target: the class) and a random sample
             of int(others_ratio * n_g) of the other RoIs, background included (target: others),
             averaged over the kept RoIs; 0 when no RoI has a class of the group.

The per-group terms are returned separately (``loss_cls_group0`` = background group) and summed
into the total. Test scores: P(class | its group) * P(fg), and P(bg), from the group softmaxes.
Compared side by side with the authors' code: docs/two_stage_methods.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .region_protocol import check_region_inputs

__all__ = ["BalancedGroupSoftmaxLoss"]


class BalancedGroupSoftmaxLoss(nn.Module):
    """BAGS (region-loss protocol, see ``region_protocol.py``).

    Args:
        num_classes: C.
        instance_counts: (C,) training instances per class by contiguous id, e.g.
            :func:`efl_d2.data.category_instance_counts`.
        bin_edges: the group boundaries on the instance counts (the authors': 10, 100, 1000).
        others_ratio: "others" RoIs kept per in-group RoI (the authors': 8).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        instance_counts: Sequence[int],
        bin_edges: Sequence[int] = (10, 100, 1000),
        others_ratio: float = 8.0,
    ):
        super().__init__()
        counts = [int(c) for c in instance_counts]
        if len(counts) != num_classes:
            raise ValueError(
                f"BalancedGroupSoftmaxLoss: instance_counts has {len(counts)} entries, expected "
                f"num_classes={num_classes}"
            )
        if list(bin_edges) != sorted(bin_edges) or others_ratio <= 0:
            raise ValueError("BalancedGroupSoftmaxLoss: bin_edges must ascend, others_ratio > 0")
        self.num_classes = int(num_classes)
        self.others_ratio = float(others_ratio)
        self.bin_edges = tuple(int(e) for e in bin_edges)
        bins = [bisect.bisect_right(self.bin_edges, c) for c in counts]
        # groups (non-empty bins, rarest first) as lists of class ids
        self.groups = [[j for j in range(num_classes) if bins[j] == b] for b in sorted(set(bins))]
        self.num_logits = self.num_classes + 2 + len(self.groups)
        # per group the column of its "others" logit; per class its group and its logit's column
        column = torch.empty(num_classes, dtype=torch.long)
        group_of = torch.full((num_classes + 1,), -1, dtype=torch.long)  # background: -1
        starts = []
        start = 2
        for g, members in enumerate(self.groups):
            starts.append(start)
            column[members] = torch.arange(start + 1, start + 1 + len(members))
            group_of[members] = g
            start += 1 + len(members)
        self.register_buffer("class_column", column, persistent=False)
        self.register_buffer("group_of", group_of, persistent=False)
        self.group_starts = starts

    def forward(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            logits: (R, C + 2 + G).
            gt_classes: (R,) int, 0..C-1 foreground, C background.
        """
        check_region_inputs(
            logits, gt_classes, self.num_classes, self.num_logits, "BalancedGroupSoftmaxLoss"
        )
        x = logits.float() if logits.dtype != torch.float64 else logits
        labels = gt_classes.long()
        fg = labels < self.num_classes
        losses = {"loss_cls_group0": F.cross_entropy(x[:, :2], fg.long())}  # mean over R
        group = self.group_of[labels]
        for g, members in enumerate(self.groups):
            inside = (group == g).nonzero().squeeze(1)
            name = f"loss_cls_group{g + 1}"
            if inside.numel() == 0:
                losses[name] = x.sum() * 0.0
                continue
            others = (group != g).nonzero().squeeze(1)
            keep = min(int(inside.numel() * self.others_ratio), others.numel())
            others = others[torch.randperm(others.numel(), device=others.device)[:keep]]
            rows = torch.cat([inside, others])
            start = self.group_starts[g]
            sliced = x[rows, start : start + 1 + len(members)]
            target = torch.zeros(rows.numel(), dtype=torch.long, device=x.device)
            target[: inside.numel()] = self.class_column[labels[inside]] - start
            losses[name] = F.cross_entropy(sliced, target)
        return losses

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(R, C + 1): in-group class probability times P(foreground), then P(background)."""
        x = logits.float()
        background = F.softmax(x[:, :2], dim=1)
        out = x.new_empty(x.shape[0], self.num_classes + 1)
        for g, members in enumerate(self.groups):
            start = self.group_starts[g]
            p = F.softmax(x[:, start : start + 1 + len(members)], dim=1)
            out[:, members] = p[:, 1:] * background[:, 1:]
        out[:, -1] = background[:, 0]
        return out

    def extra_repr(self) -> str:
        sizes = [len(m) for m in self.groups]
        return (
            f"num_classes={self.num_classes}, bin_edges={self.bin_edges}, "
            f"group_sizes={sizes}, others_ratio={self.others_ratio}"
        )
