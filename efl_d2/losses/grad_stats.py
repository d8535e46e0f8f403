"""The per-class gradient statistics shared by EFL and "EQLv2 & Focal".

What is accumulated (paper §3.2, docs/official_efl.md §2): after each training step,

    pos_grad[j] += sum_i |dL/dx_ij| * y_ij        neg_grad[j] += sum_i |dL/dx_ij| * (1 - y_ij)

over non-ignored rows, where L is the value the loss module returned (so the normaliser and the
loss's own weights are included, an upstream loss weight or GradScaler scale is not), summed over
all processes. ``pos_neg = clamp(pos_grad / (neg_grad + 1e-10), 0, 1)`` is the g used by the next
forward. The sums come from the analytic gradient computed by the fused kernel's backward, never
from module hooks, so they do not depend on hook order, FPN level count or channel layout.

When the sums are committed (this is the part that must not deadlock under DDP):

- Not distributed (no process group, or world size 1): at the end of the loss's backward. No
  collective is involved, so the buffers are up to date as soon as ``backward()`` returns.
- Distributed: the backward only adds to a *pending* local sum. Calling a collective from inside
  the autograd backward would interleave with DDP's asynchronous bucket all-reduces in an order
  that can differ between ranks (it depends on which buckets are ready when the loss node runs),
  which can deadlock or pair up the wrong tensors. Instead the pending sums are all-reduced and
  committed, as one packed tensor, at well-defined points that every rank reaches in the same
  order: the start of every training-mode, grad-enabled forward of the loss (before g is read), or
  an explicit :meth:`GradientStatistics.commit_statistics` call (``EFLStatsHook.after_backward``
  does that, so checkpoints and logs see the last step). The commit is unconditional in
  distributed mode - it all-reduces even when nothing is pending - so the number of collectives
  depends only on how often these points are reached, never on local data.

A step is skipped as a whole (on every rank) when any rank saw a non-finite gradient for this loss
(e.g. an overflowing fp16 step under a GradScaler): the packed tensor carries a "bad step" count.
"""

from __future__ import annotations

import numbers
from typing import Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["G_MAX", "GradientSink", "GradientStatistics", "gradient_ratio"]

_EPS = 1e-10
#: The largest g: ``pos_neg`` is the gradient ratio clamped to [0, G_MAX].
G_MAX = 1.0


def gradient_ratio(pos_grad: torch.Tensor, neg_grad: torch.Tensor) -> torch.Tensor:
    """Unclamped pos_grad / (neg_grad + 1e-10) per class: the ratio behind EFL's g_j and EQLv2's
    weights (also usable on buffers read from a checkpoint)."""
    return pos_grad / (neg_grad + _EPS)


@runtime_checkable
class GradientSink(Protocol):
    """What a loss kernel needs of a statistics sink: one call per backward. Every kernel
    (:func:`~efl_d2.losses.focal_family_loss`'s, or a second one, e.g. a fused GPU kernel or a
    two-stage classifier's loss) hands its sums through this method and nothing else."""

    def add_gradient_sums(self, pos: torch.Tensor, neg: torch.Tensor, finite: torch.Tensor) -> None:
        """Add one backward's per-class sums.

        Args:
            pos: (C,) sum over positive elements of |dL/dx| (L the value the loss returned).
            neg: (C,) the same over negative elements; ignored rows contribute to neither.
            finite: 0-dim bool, False when the step's gradient was not finite (an overflowing
                fp16 step): the step then leaves the statistics unchanged on every process.
        """


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GradientStatistics(nn.Module):
    """Base class of every loss that keeps per-class accumulated gradient statistics.

    Buffers (persistent, float32, shape (C,), saved in the model's ``state_dict``):
        pos_grad: accumulated |dL/dx| over positive elements of each class.
        neg_grad: accumulated |dL/dx| over negative elements of each class.
        pos_neg: g = clamp(pos_grad / (neg_grad + 1e-10), 0, 1); starts at 1.

    Subclasses call :meth:`_begin_forward` at the start of ``forward`` and pass ``self`` as the
    statistics sink (a :class:`GradientSink`) of :func:`focal_family_loss` when :meth:`_collects`
    says so.
    """

    #: True where a class whose g is clamped at :data:`G_MAX` is trained with exactly the focal
    #: loss (EFL: gamma_j = gamma_b, weight 1), so :meth:`saturated_classes` says for which classes
    #: the loss does nothing beyond focal loss. False where g_j = 1 means no such thing (EQLv2's
    #: weights use the unclamped ratio).
    focal_when_saturated: bool = False

    def __init__(self, num_classes: int):
        super().__init__()
        if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool):
            raise TypeError(f"num_classes must be a positive int, got {num_classes!r}")
        num_classes = int(num_classes)
        if num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes}")
        self.num_classes = num_classes
        self.register_buffer("pos_grad", torch.zeros(num_classes))
        self.register_buffer("neg_grad", torch.zeros(num_classes))
        self.register_buffer("pos_neg", torch.ones(num_classes))
        # [pos (C), neg (C), #finite contributions, #non-finite contributions]; not a buffer: it is
        # per-process, uncommitted data and must not be checkpointed or broadcast.
        self._pending: torch.Tensor | None = None

    def gradient_ratio(self) -> torch.Tensor:
        """Unclamped pos_grad / (neg_grad + 1e-10), shape (C,)."""
        return gradient_ratio(self.pos_grad, self.neg_grad)

    def _collects(self, logits: torch.Tensor) -> bool:
        # Eval-mode and no_grad forwards leave the statistics untouched.
        return self.training and torch.is_grad_enabled() and logits.requires_grad

    def _begin_forward(self) -> None:
        if self.training and torch.is_grad_enabled() and _is_distributed():
            self.commit_statistics()

    @torch.no_grad()
    def add_gradient_sums(self, pos: torch.Tensor, neg: torch.Tensor, finite: torch.Tensor) -> None:
        """:meth:`GradientSink.add_gradient_sums`: pending until committed (at once when not
        distributed)."""
        c = self.num_classes
        if self._pending is None:
            self._pending = self.pos_grad.new_zeros(2 * c + 2)
        pending = self._pending
        # torch.where, not multiplication: a non-finite sum must not leak NaN into the pending sum.
        pending[:c] += torch.where(finite, pos.to(pending), 0.0)
        pending[c : 2 * c] += torch.where(finite, neg.to(pending), 0.0)
        pending[2 * c] += finite.to(pending)
        pending[2 * c + 1] += (~finite).to(pending)
        if not _is_distributed():
            self.commit_statistics()

    @torch.no_grad()
    def commit_statistics(self) -> None:
        """Add the pending sums (all-reduced when distributed) to the buffers and update g.

        Collective when torch.distributed is initialised with more than one process: every rank
        must call it the same number of times, in the same order relative to other collectives.
        """
        c = self.num_classes
        pending = self._pending
        self._pending = None
        distributed = _is_distributed()
        if pending is None:
            if not distributed:
                return
            pending = self.pos_grad.new_zeros(2 * c + 2)
        if distributed:
            dist.all_reduce(pending, op=dist.ReduceOp.SUM)
        ok = (pending[2 * c] > 0) & (pending[2 * c + 1] == 0)
        # No host sync: a skipped or empty step leaves every buffer bit-identical.
        self.pos_grad.copy_(torch.where(ok, self.pos_grad + pending[:c], self.pos_grad))
        self.neg_grad.copy_(torch.where(ok, self.neg_grad + pending[c : 2 * c], self.neg_grad))
        ratio = self.gradient_ratio().clamp_(0.0, G_MAX)
        self.pos_neg.copy_(torch.where(ok, ratio, self.pos_neg))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Uncommitted sums belong to the run the buffers are being replaced from.
        self._pending = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def has_pending_statistics(self) -> bool:
        """Whether a backward has added sums that are not committed yet (distributed mode)."""
        return self._pending is not None

    def has_statistics(self) -> bool:
        """Whether any gradient has been committed to the buffers (from training or a checkpoint).
        Before that, g is 1 for every class only because it starts there."""
        return bool((self.pos_grad > 0).any() or (self.neg_grad > 0).any())

    def saturated_classes(self) -> torch.Tensor:
        """(C,) bool: the classes whose g is clamped at :data:`G_MAX` by accumulated gradients,
        i.e. their positive gradient sum reached their negative one. A class that has not been
        updated yet (g at its initial 1, pos_grad 0) is not counted; one that never had a
        positive sample has g = 0 and is not either."""
        return (self.pos_neg >= G_MAX) & (self.pos_grad > 0)

    def category_statistics(self) -> dict[str, torch.Tensor]:
        """Per-class (C,) tensors worth logging, keyed by a short name. Subclasses extend it."""
        return {"g": self.pos_neg.detach().clone()}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"
