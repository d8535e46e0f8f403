"""Float64 references and inputs shared by the loss tests (test_losses, test_loss_stats,
test_loss_distributed, test_cuda).

- ``reference_loss`` / ``reference_stats``: the focal-loss family and its gradient statistics in
  float64 via torch.autograd, with ``efl_params`` / ``eqlv2_params`` giving each loss's
  (gamma, pos_w, neg_w) from the paper's equations;
- ``reference_run`` and ``VARIANTS``: the whole statistics loop over several steps, per loss;
- ``make_batch``: seeded logits and labels (saturated, background and ignored rows) for ``C``
  classes, and the ``chunking`` fixture that reruns a test with tiny kernel chunks.
"""

import pytest
import torch
from torch.nn import functional as F

from efl_d2.losses import EQLv2FocalLoss, EqualizedFocalLoss, focal_kernel

C = 5


def one_hot_targets(gt, num_classes):
    """(N, C) float64 targets; background and ignored rows are all zero."""
    y = torch.zeros(gt.shape[0], num_classes, dtype=torch.float64)
    fg = (gt >= 0) & (gt < num_classes)
    y[fg.nonzero().squeeze(1), gt[fg]] = 1.0
    return y


def reference_loss(x, gt, gamma, pos_w, neg_w, normalizer):
    """sum_{non-ignored} a_ij (1 - p_t)^gamma_j (-log p_t) / normalizer, in float64, via log-sigmoid.

    ``gamma``, ``pos_w``, ``neg_w``: (C,) float64 (element weights of positives / negatives).
    """
    y = one_hot_targets(gt, x.shape[1])
    xt = torch.where(y > 0, x, -x)
    w = torch.where(y > 0, pos_w, neg_w)
    elem = w * torch.exp(gamma * F.logsigmoid(-xt)) * (-F.logsigmoid(xt))
    valid = (gt >= 0).to(x.dtype)[:, None]
    return (elem * valid).sum() / normalizer


def reference_stats(x, gt, gamma, pos_w, neg_w, normalizer):
    """(loss, grad, pos, neg): the statistics from torch.autograd of the reference loss."""
    x = x.detach().double().requires_grad_(True)
    loss = reference_loss(x, gt, gamma, pos_w, neg_w, normalizer)
    (grad,) = torch.autograd.grad(loss, x)
    y = one_hot_targets(gt, x.shape[1])
    valid = (gt >= 0).double()[:, None]
    g = grad.abs()
    return loss.detach(), grad, (g * y).sum(0), (g * (1 - y) * valid).sum(0)


def efl_params(g, *, gamma_b=2.0, scale=8.0, alpha=0.25, ff=True, wf=True):
    """(gamma, pos_w, neg_w) of EFL and its ablations for ratio g, written from paper Eq. 4."""
    g = g.double()
    gamma_v = scale * (1 - g)
    gamma = gamma_b + gamma_v if ff else torch.full_like(g, gamma_b)
    w = (gamma_b + gamma_v) / gamma_b if wf else torch.ones_like(g)
    return gamma, alpha * w, (1 - alpha) * w


def eqlv2_params(pos_grad, neg_grad, *, gamma=2.0, alpha=0.25, eg=12.0, mu=0.8, ea=4.0):
    ratio = pos_grad.double() / (neg_grad.double() + 1e-10)
    f = 1 / (1 + torch.exp(-eg * (ratio - mu)))
    f[(pos_grad == 0) & (neg_grad == 0)] = 1.0  # no statistics yet: weights exactly 1
    return torch.full_like(ratio, gamma), alpha * (1 + ea * (1 - f)), (1 - alpha) * f


def make_batch(n=40, num_classes=C, seed=0, big=True, ignore=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, num_classes, generator=gen) * 3
    if big:  # saturated logits of both signs, on positives and negatives
        x[0, :] = 100.0
        x[1, :] = -100.0
        x[2, :] = 50.0
        x[3, :] = -50.0
    gt = torch.randint(0, num_classes + 1, (n,), generator=gen)
    gt[:4] = torch.tensor([0, 1, num_classes, 2])
    if ignore:
        gt[torch.rand(n, generator=gen) < 0.2] = -1
    return x, gt


@pytest.fixture(params=[None, 2 * C, 3 * C + 1], ids=["one-chunk", "2-row-chunks", "3-row-chunks"])
def chunking(request, monkeypatch):
    """Run a test with the default chunking and with tiny chunks (several chunks, some of them
    fully ignored, positives spread across chunk boundaries)."""
    if request.param is not None:
        monkeypatch.setattr(focal_kernel, "_CHUNK_ELEMENTS_OVERRIDE", request.param)
    return request.param


def reference_run(batches, normalizers, params_fn):
    """Float64 re-implementation of the whole statistics loop (docs/official_efl.md §2.1 steps 2-6).

    Returns the per-step losses and the final (pos_grad, neg_grad, pos_neg).
    """
    pos_grad = torch.zeros(C, dtype=torch.float64)
    neg_grad = torch.zeros(C, dtype=torch.float64)
    pos_neg = torch.ones(C, dtype=torch.float64)
    losses = []
    for (x, gt), norm in zip(batches, normalizers):
        loss, _, pos, neg = reference_stats(x, gt, *params_fn(pos_grad, neg_grad, pos_neg), norm)
        losses.append(loss)
        pos_grad += pos
        neg_grad += neg
        pos_neg = (pos_grad / (neg_grad + 1e-10)).clamp(0, 1)
    return torch.stack(losses), pos_grad, neg_grad, pos_neg


VARIANTS = {
    "efl": (lambda: EqualizedFocalLoss(C), lambda pg, ng, g: efl_params(g)),
    "ff-only": (
        lambda: EqualizedFocalLoss(C, weighting_factor=False),
        lambda pg, ng, g: efl_params(g, wf=False),
    ),
    "wf-only": (
        lambda: EqualizedFocalLoss(C, focusing_factor=False),
        lambda pg, ng, g: efl_params(g, ff=False),
    ),
    "eqlv2-focal": (lambda: EQLv2FocalLoss(C), lambda pg, ng, g: eqlv2_params(pg, ng)),
}
