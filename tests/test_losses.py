"""Loss values and gradients of the focal-loss family against independent float64 references
(tests/_loss_references.py)."""

import math

import pytest
import torch
from _loss_references import (
    C,
    chunking,  # noqa: F401  (fixture, used through usefixtures)
    efl_params,
    eqlv2_params,
    make_batch,
    one_hot_targets,
    reference_stats,
)

from efl_d2.losses import EQLv2FocalLoss, EqualizedFocalLoss, SigmoidFocalLoss


@pytest.mark.usefixtures("chunking")
def test_scale_zero_is_sigmoid_focal_loss():
    from fvcore.nn import sigmoid_focal_loss as fv_focal
    from torchvision.ops import sigmoid_focal_loss as tv_focal

    x, gt = make_batch(big=False)
    valid = gt >= 0
    y = one_hot_targets(gt, C).float()
    for crit in (
        EqualizedFocalLoss(C, scale=0.0),
        EqualizedFocalLoss(C, focusing_factor=False, weighting_factor=False),
        SigmoidFocalLoss(C),
    ):
        if isinstance(crit, EqualizedFocalLoss):
            crit.pos_neg.uniform_(0, 1)  # g must not matter
        xa = x.clone().requires_grad_(True)
        loss = crit(xa, gt, 7.0)
        loss.backward()
        xb = x.clone().requires_grad_(True)
        ref = tv_focal(xb[valid], y[valid], alpha=0.25, gamma=2.0, reduction="sum") / 7.0
        ref.backward()
        ref_fv = fv_focal(x[valid], y[valid], alpha=0.25, gamma=2.0, reduction="sum") / 7.0
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss, ref_fv, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("ff,wf", [(True, True), (True, False), (False, True)])
@pytest.mark.usefixtures("chunking")
def test_efl_and_ablations_match_reference(ff, wf):
    x, gt = make_batch()
    g = torch.tensor([1.0, 0.7, 0.3, 0.05, 0.0])
    crit = EqualizedFocalLoss(C, focusing_factor=ff, weighting_factor=wf).eval()
    crit.pos_neg.copy_(g)
    xa = x.clone().requires_grad_(True)
    loss = crit(xa, gt, 3.0)
    loss.backward()
    ref_loss, ref_grad, _, _ = reference_stats(x, gt, *efl_params(g, ff=ff, wf=wf), 3.0)
    assert torch.isfinite(loss) and torch.isfinite(xa.grad).all()
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xa.grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


def test_ablations_differ_from_each_other():
    # Guards against flags being ignored: with non-trivial g all four variants differ.
    x, gt = make_batch(big=False)
    values = []
    for ff, wf in [(True, True), (True, False), (False, True), (False, False)]:
        crit = EqualizedFocalLoss(C, focusing_factor=ff, weighting_factor=wf).eval()
        crit.pos_neg.copy_(torch.tensor([1.0, 0.7, 0.3, 0.05, 0.0]))
        values.append(crit(x, gt, 1.0).item())
    assert len({round(v, 6) for v in values}) == 4


@pytest.mark.usefixtures("chunking")
def test_eqlv2_focal_matches_reference():
    x, gt = make_batch()
    crit = EQLv2FocalLoss(C).eval()
    crit.pos_grad.copy_(torch.tensor([3.0, 1.0, 0.5, 0.0, 2.0]))
    crit.neg_grad.copy_(torch.tensor([1.0, 1.0, 1.0, 4.0, 2.2]))  # ratios 3, 1, .5, 0, ~.91
    xa = x.clone().requires_grad_(True)
    loss = crit(xa, gt, 2.0)
    loss.backward()
    ref_loss, ref_grad, _, _ = reference_stats(
        x, gt, *eqlv2_params(crit.pos_grad, crit.neg_grad), 2.0
    )
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xa.grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


def test_eqlv2_weights_are_one_before_any_update():
    crit = EQLv2FocalLoss(C)
    pos_w, neg_w = crit.eqlv2_weights()
    assert torch.equal(pos_w, torch.ones(C)) and torch.equal(neg_w, torch.ones(C))
    x, gt = make_batch(big=False)
    torch.testing.assert_close(crit(x, gt, 4.0), SigmoidFocalLoss(C)(x, gt, 4.0))
    # The closed-form table of docs/official_efl.md §3: f(0.8) = 0.5, f(0.5) = 0.026597.
    crit.pos_grad.copy_(torch.tensor([0.8, 0.5, 0.0, 1.0, 0.9]))
    crit.neg_grad.fill_(1.0)
    pos_w, neg_w = crit.eqlv2_weights()
    torch.testing.assert_close(neg_w[:2], torch.tensor([0.5, 0.026597]), rtol=1e-4, atol=0)
    torch.testing.assert_close(pos_w[:2], torch.tensor([3.0, 4.89361]), rtol=1e-5, atol=0)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    gt = torch.tensor([0, 1, 2, 3, -1, 3, 1])
    efl = EqualizedFocalLoss(3).eval()
    efl.pos_neg.copy_(torch.tensor([0.9, 0.4, 0.0]))
    eql = EQLv2FocalLoss(3).eval()
    eql.pos_grad.copy_(torch.tensor([1.0, 0.2, 0.0]))
    eql.neg_grad.copy_(torch.tensor([1.0, 1.0, 1.0]))
    for crit in (efl, eql, EqualizedFocalLoss(3, focusing_factor=False).eval()):
        assert crit(x, gt, 1.5).dtype == torch.float64
        assert torch.autograd.gradcheck(
            lambda z, crit=crit: crit(z, gt, 1.5), (x,), eps=1e-6, atol=1e-7
        )


@pytest.mark.usefixtures("chunking")
def test_ignored_rows_change_nothing():
    x, gt = make_batch(ignore=False)
    gt_ign = gt.clone()
    gt_ign[5:9] = -1
    x_garbage = x.clone()
    x_garbage[5:9] = torch.tensor([1e4, -1e4, math.nan, math.inf, -7.0])  # ignored rows
    crit = EqualizedFocalLoss(C).eval()
    crit.pos_neg.copy_(torch.tensor([1.0, 0.5, 0.2, 0.1, 0.0]))
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    keep[5:9] = False
    xa = x_garbage.clone().requires_grad_(True)
    loss = crit(xa, gt_ign, 2.0)
    loss.backward()
    xb = x[keep].clone().requires_grad_(True)
    loss_kept = crit(xb, gt[keep], 2.0)
    loss_kept.backward()
    torch.testing.assert_close(loss, loss_kept)
    assert torch.equal(xa.grad[5:9], torch.zeros(4, C))
    torch.testing.assert_close(xa.grad[keep], xb.grad)


def test_background_is_label_num_classes():
    x = torch.randn(6, C)
    gt_bg = torch.full((6,), C)
    crit = SigmoidFocalLoss(C, alpha=-1)  # no alpha: every element is -(p^2) log(1 - p)
    p = torch.sigmoid(x.double())
    expected = (p**2 * -torch.log1p(-p)).sum()
    torch.testing.assert_close(crit(x, gt_bg, 1.0).double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.usefixtures("chunking")
def test_low_precision_logits_are_computed_in_fp32(dtype):
    x, gt = make_batch(big=False)
    x_lp = x.to(dtype)
    crit = EqualizedFocalLoss(C).eval()
    crit.pos_neg.copy_(torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0]))
    xa = x_lp.clone().requires_grad_(True)
    loss = crit(xa, gt, 5.0)
    loss.backward()
    xb = x_lp.float().requires_grad_(True)  # the same values, in fp32
    ref = crit(xb, gt, 5.0)
    ref.backward()
    assert loss.dtype == torch.float32 and xa.grad.dtype == dtype
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(xa.grad, xb.grad.to(dtype))


def test_normalizer_tensor_and_float_agree():
    x, gt = make_batch(big=False)
    crit = EqualizedFocalLoss(C)
    assert crit(x, gt, torch.tensor(4.0)).item() == crit(x, gt, 4.0).item()


def test_empty_input():
    crit = EqualizedFocalLoss(C)
    x = torch.zeros(0, C, requires_grad=True)
    loss = crit(x, torch.zeros(0, dtype=torch.long), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (0, C)


@pytest.mark.parametrize(
    "logits,gt,norm,match",
    [
        (torch.zeros(4, C + 1), torch.zeros(4, dtype=torch.long), 1.0, "num_classes=5"),
        (torch.zeros(4, C), torch.zeros(3, dtype=torch.long), 1.0, "shape"),
        (torch.zeros(4, C, 1), torch.zeros(4, dtype=torch.long), 1.0, "shape"),
        (torch.zeros(4, C), torch.tensor([0, 1, C + 1, 2]), 1.0, r"\[-1, 5\]"),
        (torch.zeros(4, C), torch.tensor([0, 1, -2, 2]), 1.0, r"\[-1, 5\]"),
        (torch.zeros(4, C), torch.zeros(4), 1.0, "integer"),
        (torch.zeros(4, C), torch.zeros(4, dtype=torch.long), 0.0, "positive"),
        (torch.zeros(4, C), torch.zeros(4, dtype=torch.long), torch.tensor(-2.0), "positive"),
        (torch.zeros(4, C), torch.zeros(4, dtype=torch.long), math.nan, "positive"),
        (torch.zeros(4, C, dtype=torch.long), torch.zeros(4, dtype=torch.long), 1.0, "float"),
    ],
)
def test_input_validation(logits, gt, norm, match):
    for crit in (EqualizedFocalLoss(C), EQLv2FocalLoss(C), SigmoidFocalLoss(C)):
        with pytest.raises(ValueError, match=match):
            crit(logits, gt, norm)


def test_constructor_validation():
    with pytest.raises(ValueError, match="gamma_b"):
        EqualizedFocalLoss(C, gamma_b=0.0)
    with pytest.raises(ValueError, match="scale"):
        EqualizedFocalLoss(C, scale=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        EQLv2FocalLoss(C, alpha=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        EqualizedFocalLoss(0)
    with pytest.raises(TypeError):
        EqualizedFocalLoss(C, 2.0)  # keyword-only


def test_efl_focusing_factor_is_the_losses_and_reads_back_from_a_checkpoint(tmp_path):
    """One gamma_j formula (paper Eq. 3) for the loss, the plot tool and the study, and one reader
    of the statistics a checkpoint holds."""
    import numpy as np

    from efl_d2.checkpoint import read_loss_statistics
    from efl_d2.losses import EqualizedFocalLoss, efl_focusing_factor

    loss = EqualizedFocalLoss(4, gamma_b=2.0, scale=8.0)
    loss.pos_neg.copy_(torch.tensor([0.0, 0.25, 0.5, 1.0]))
    assert torch.equal(loss.category_gamma(), torch.tensor([10.0, 8.0, 6.0, 2.0]))
    g = np.array([0.0, 0.25, 1.0])
    assert efl_focusing_factor(g, gamma_b=2.0, scale=4.0).tolist() == [6.0, 5.0, 2.0]
    path = tmp_path / "model.pth"
    torch.save({"model": {f"roi.cls_loss.{k}": v for k, v in loss.state_dict().items()}}, path)
    stats = read_loss_statistics(str(path))
    assert list(stats) == ["roi.cls_loss"]
    assert stats["roi.cls_loss"]["pos_neg"].dtype == torch.float64
    assert stats["roi.cls_loss"]["pos_neg"].tolist() == [0.0, 0.25, 0.5, 1.0]
