"""One fused, memory-bounded kernel for the whole sigmoid focal-loss family.

Every loss in this package (sigmoid focal loss, EFL, its two ablations, "EQLv2 & Focal") is the
same per-element formula with per-class parameters:

    loss_ij = a_ij * (1 - p_t)^{gamma_j} * (-log p_t),     p_t = sigmoid(x_t),  x_t = (2y - 1) x

where ``a_ij = pos_weight[j]`` for the (single) positive element of row i and ``neg_weight[j]``
otherwise. The returned value is ``sum over non-ignored rows / normalizer``.

Its derivative is written analytically (docs/official_efl.md §2.3):

    y = 1:  dloss/dx = -a * q^gamma * (q + gamma * p * softplus(-x)),   q = 1 - p
    y = 0:  dloss/dx = +a * p^gamma * (p + gamma * (1 - p) * softplus(x))

Both brackets are non-negative, so |grad| needs no abs. The positive element of a row is at most one
entry, so the kernel treats every element as negative and patches the <= N positive entries with a
gather/scatter: no one-hot (N, C) target is ever built. Rows are processed in chunks, and the
backward recomputes from the saved logits instead of saving intermediates; the only (N, C) tensor
allocated is the returned gradient. The per-class sums of |dL/dx| (the EFL/EQLv2 statistics) fall
out of the backward for free and are handed to a :class:`~efl_d2.losses.grad_stats.GradientSink`
(a :class:`GradientStatistics` loss) through its one method, ``add_gradient_sums``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

if TYPE_CHECKING:  # pragma: no cover
    from .grad_stats import GradientSink

__all__ = ["default_chunk_elements", "focal_family_loss"]

# Elements per chunk. A chunk costs ~16 elementwise ops. Single-threaded, cache-sized chunks are
# fastest. With several threads every op is a parallel region ending in a barrier, and on an
# oversubscribed CPU (data-loader workers, other jobs) a barrier can wait a whole scheduler slice:
# measured on a busy 2-core machine, the time grew linearly with the number of chunks (~0.2 s per
# chunk). So multi-threaded (and on GPU) chunks are as large as the memory budget allows: the
# chunk's ~4 float32 temporaries take at most 3/4 of the logits' bytes, so together with the
# returned gradient the extra peak stays within ~1.75x the logits for any input dtype.
_CPU_CHUNK_ELEMENTS = 1 << 18
_MIN_CHUNK_ELEMENTS = 1 << 18
_CHUNK_ELEMENTS_OVERRIDE: int | None = None  # set by tests and tools/benchmark_loss.py


def default_chunk_elements(logits: torch.Tensor) -> int:
    """Number of (row x class) elements processed per chunk for ``logits``."""
    if _CHUNK_ELEMENTS_OVERRIDE:
        return _CHUNK_ELEMENTS_OVERRIDE
    if logits.device.type == "cpu" and torch.get_num_threads() == 1:
        return _CPU_CHUNK_ELEMENTS
    budget_bytes = 0.75 * logits.numel() * logits.element_size()
    return max(_MIN_CHUNK_ELEMENTS, math.ceil(budget_bytes / (4 * 4)))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half/bfloat16 are computed in float32 (the returned loss is float32); float64 stays float64 so
    # gradcheck is meaningful.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _workspace(logits: torch.Tensor, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows, C) buffers reused by every chunk, so no chunk allocates an (R, C) tensor: three for
    the intermediates, a fourth for the compute-dtype copy of half/bfloat16 logits."""
    count = 3 if logits.dtype == dtype else 4
    return logits.new_empty((count, min(rows, logits.shape[0]), logits.shape[1]), dtype=dtype)


def _negative_chunk(
    x: torch.Tensor, gamma: float | torch.Tensor, work: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """p = sigmoid(x), a = softplus(x) = -log(1 - p) and p^gamma of a (R, C) chunk, written into
    the three buffers of ``work``."""
    r = x.shape[0]
    p = torch.sigmoid(x, out=work[0, :r])
    a = torch.ops.aten.softplus.out(x, 1, 20, out=work[1, :r])  # F.softplus without allocation
    if isinstance(gamma, float) and gamma == 2.0:
        pg = torch.mul(p, p, out=work[2, :r])
    else:
        # p^gamma = exp(gamma * log p) with log p = x - softplus(x): ~2x faster than pow() on CPU
        # and accurate where p underflows.
        pg = torch.sub(x, a, out=work[2, :r]).mul_(gamma).exp_()
    return p, a, pg


def _positive_terms(
    xp: torch.Tensor, gamma_p: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unweighted loss and |grad| of positive elements (1-D ``xp``, compute dtype)."""
    b = F.softplus(-xp)  # -log p
    q = torch.sigmoid(-xp)  # 1 - p, accurate when p -> 1
    qg = q.pow(gamma_p)
    loss = qg * b
    grad_abs = qg * (q + gamma_p * torch.sigmoid(xp) * b)
    return loss, grad_abs


class _ChunkPlan:
    """Row chunks of the input with, per chunk, the local indices of its ignored rows and of its
    positive elements (row, class).

    The indices are found once for the whole input, with three host syncs in all, and sliced per
    chunk with host-side offsets: a sync per chunk would stall a GPU between chunks, which made the
    CUDA kernel launch-bound (measured on an H200: 11.4 ms for one LVIS-sized image, vs 5.9 ms
    without chunking). The forward builds the plan and the backward reuses it.
    """

    def __init__(self, gt: torch.Tensor, num_classes: int, rows_per_chunk: int):
        n = gt.shape[0]
        self.rows = rows_per_chunk
        self.starts = list(range(0, n, rows_per_chunk))
        self.ends = [min(start + rows_per_chunk, n) for start in self.starts]
        self.pos_rows = ((gt >= 0) & (gt < num_classes)).nonzero().squeeze(1)  # ascending
        self.pos_cls = gt.index_select(0, self.pos_rows)
        self.ignored = (gt < 0).nonzero().squeeze(1)
        edges = torch.tensor(self.starts + [n], device=gt.device, dtype=self.pos_rows.dtype)
        cuts = torch.cat(
            [torch.searchsorted(self.pos_rows, edges), torch.searchsorted(self.ignored, edges)]
        ).tolist()
        self.pos_cuts, self.ign_cuts = cuts[: len(edges)], cuts[len(edges) :]

    def positive_logits(self, logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(P,) logits of the positive elements, in row order, as ``dtype``."""
        return logits[self.pos_rows, self.pos_cls].to(dtype)

    def __iter__(self):
        for k, (start, end) in enumerate(zip(self.starts, self.ends)):
            p0, p1 = self.pos_cuts[k], self.pos_cuts[k + 1]
            i0, i1 = self.ign_cuts[k], self.ign_cuts[k + 1]
            ignored = self.ignored[i0:i1] - start if i1 > i0 else None
            yield start, end, ignored, self.pos_rows[p0:p1] - start, self.pos_cls[p0:p1]


def _load_chunk(logits: torch.Tensor, start: int, end: int, work: torch.Tensor) -> torch.Tensor:
    x = logits[start:end]
    if x.dtype == work.dtype:
        return x  # a view: no copy
    return work[3, : end - start].copy_(x)


def _select(vec: float | torch.Tensor, idx: torch.Tensor) -> float | torch.Tensor:
    return vec if isinstance(vec, float) else vec.index_select(0, idx)


class _FocalFamilyFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        gt: torch.Tensor,
        gamma: torch.Tensor | None,
        gamma_scalar: float,
        pos_weight: torch.Tensor,
        neg_weight: torch.Tensor,
        normalizer: float,
        sink: GradientSink | None,
        chunk_elements: int,
    ) -> torch.Tensor:
        c = logits.shape[1]
        cdt = _compute_dtype(logits.dtype)
        g: float | torch.Tensor = gamma_scalar if gamma is None else gamma
        rows = max(1, chunk_elements // max(c, 1))
        neg_colsum = logits.new_zeros(c, dtype=cdt)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            plan = _ChunkPlan(gt, c, rows)
            # The positives (at most one per row) in one go, outside the chunk loop: fewer
            # per-chunk kernel launches, which bound the speed on a GPU.
            lp, _ = _positive_terms(plan.positive_logits(logits, cdt), _select(g, plan.pos_cls))
            total = torch.dot(lp, pos_weight.index_select(0, plan.pos_cls))
            work = _workspace(logits, rows, cdt)
            for start, end, ignored, pos_rows, pos_cls in plan:
                x = _load_chunk(logits, start, end, work)
                _, a, pg = _negative_chunk(x, g, work)
                elem = pg.mul_(a)  # unweighted loss of every element as a negative
                if ignored is not None:
                    elem.index_fill_(0, ignored, 0.0)  # assignment: NaN/inf logits there vanish
                if pos_rows.numel():
                    elem[pos_rows, pos_cls] = 0.0  # counted by the positive formula above
                neg_colsum += elem.sum(0)
            total = total + torch.dot(neg_colsum, neg_weight)
        ctx.save_for_backward(logits, gamma, pos_weight, neg_weight)
        ctx.gamma_scalar = gamma_scalar
        ctx.normalizer = normalizer
        ctx.sink = sink
        ctx.plan = plan
        return total / normalizer

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        logits, gamma, pos_weight, neg_weight = ctx.saved_tensors
        sink = ctx.sink
        c = logits.shape[1]
        cdt = _compute_dtype(logits.dtype)
        g: float | torch.Tensor = ctx.gamma_scalar if gamma is None else gamma
        plan = ctx.plan
        norm = ctx.normalizer
        go = grad_out.to(cdt)
        # Per-column scale of the negative gradients, with the upstream gradient (e.g. a
        # GradScaler's scale); the statistics use the unscaled |dL/dx| (L = the returned loss).
        neg_scale = neg_weight * (go / norm)
        pos_scale = -go / norm
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        same_dtype = logits.dtype == cdt
        neg_sum = logits.new_zeros(c, dtype=cdt)
        pos_sum = logits.new_zeros(c, dtype=cdt)
        finite = torch.isfinite(go)
        dtype_max = torch.finfo(logits.dtype).max
        with torch.autocast(device_type=logits.device.type, enabled=False):
            _, gp = _positive_terms(plan.positive_logits(logits, cdt), _select(g, plan.pos_cls))
            gp = gp * pos_weight.index_select(0, plan.pos_cls)
            if sink is not None:
                pos_sum.index_add_(0, plan.pos_cls, gp)
            gp_out = (gp * pos_scale).to(logits.dtype)
            if sink is not None and not same_dtype:
                finite &= torch.isfinite(gp_out).all()
            work = _workspace(logits, plan.rows, cdt)
            for start, end, ignored, pos_rows, pos_cls in plan:
                x = _load_chunk(logits, start, end, work)
                p, t, pg = _negative_chunk(x, g, work)
                t.addcmul_(t, p, value=-1.0)  # (1 - p) * softplus(x)
                if isinstance(g, float):
                    t = torch.add(p, t, alpha=g, out=t)
                else:
                    t = torch.addcmul(p, t, g, out=t)
                t.mul_(pg)  # unweighted |grad| of every element as a negative
                if ignored is not None:
                    t.index_fill_(0, ignored, 0.0)  # no gradient, no statistics
                if pos_rows.numel():
                    t[pos_rows, pos_cls] = 0.0
                if sink is not None:
                    neg_sum += t.sum(0)
                # Negative gradients (with the dtype cast), then the positives patched in.
                if same_dtype:
                    torch.mul(t, neg_scale, out=grad[start:end])
                else:
                    if sink is not None:
                        # The cast to half/bfloat16 may overflow although the fp32 values are
                        # finite; max_i(t_ij) * |s_j| is exactly the largest scaled magnitude.
                        finite &= (t.amax(0) * neg_scale.abs()).max() <= dtype_max
                    grad[start:end].copy_(t.mul_(neg_scale))
            grad[plan.pos_rows, plan.pos_cls] = gp_out  # the positives, over their zeros
        if sink is not None:
            pos_stat = (pos_sum / norm).float()
            neg_stat = (neg_sum * neg_weight / norm).float()
            finite &= torch.isfinite(pos_stat).all() & torch.isfinite(neg_stat).all()
            if same_dtype:
                # |grad| <= (1 + gamma/2) * weight * |go| / norm (both brackets are bounded), so
                # an fp32/fp64 gradient can only overflow if this bound does.
                gmax = g if isinstance(g, float) else g.max()
                wmax = torch.maximum(pos_weight.max(), neg_weight.max())
                bound = (1 + gmax / 2) * wmax * go.abs() / norm
                finite &= bound <= dtype_max
            sink.add_gradient_sums(pos_stat, neg_stat, finite)
        return grad, None, None, None, None, None, None, None, None


def _kernel_for(logits: torch.Tensor) -> type[torch.autograd.Function]:
    """The one place where an implementation is chosen. A second kernel (e.g. a fused CUDA one)
    takes the same ``apply`` arguments, computes the same value and gradient, and feeds the sink
    through ``add_gradient_sums``; tests/test_cuda.py holds any device kernel to this one."""
    return _FocalFamilyFunction


def focal_family_loss(
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    *,
    gamma: float | torch.Tensor,
    pos_weight: torch.Tensor,
    neg_weight: torch.Tensor,
    normalizer: float,
    statistics: GradientSink | None = None,
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """Fused sigmoid focal-family loss with an analytic, chunk-recomputed backward.

    Args:
        logits: (N, C) float tensor of any float dtype (half/bfloat16 are computed in float32).
        gt_classes: (N,) int64, ``0..C-1`` foreground, ``C`` background, ``-1`` ignored. Must be
            validated by the caller.
        gamma: focusing exponent, a Python float (same for all classes) or a (C,) tensor.
        pos_weight: (C,) weight of positive elements of each class (alpha included).
        neg_weight: (C,) weight of negative elements of each class (1 - alpha included).
        normalizer: positive Python float; the sum is divided by it.
        statistics: if given, the backward hands it the per-class sums of |dL/dx| over positive
            and negative elements (each of shape (C,), float32) and a finiteness flag.
        chunk_elements: elements per chunk (default: :func:`default_chunk_elements`).

    Returns:
        0-dim loss tensor: float32 (float64 for float64 logits).
    """
    cdt = _compute_dtype(logits.dtype)
    gamma_t = None
    gamma_s = 0.0
    if isinstance(gamma, torch.Tensor):
        gamma_t = gamma.detach().to(device=logits.device, dtype=cdt)
    else:
        gamma_s = float(gamma)
    return _kernel_for(logits).apply(
        logits,
        gt_classes,
        gamma_t,
        gamma_s,
        pos_weight.detach().to(device=logits.device, dtype=cdt),
        neg_weight.detach().to(device=logits.device, dtype=cdt),
        float(normalizer),
        statistics,
        chunk_elements or default_chunk_elements(logits),
    )
