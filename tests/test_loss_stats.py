"""The gradient statistics shared by EFL and EQLv2&Focal: what, when, AMP, resume, observability."""

import itertools

import pytest
import torch
from _loss_references import (
    VARIANTS,
    C,
    chunking,  # noqa: F401  (fixture, used through usefixtures)
    efl_params,
    make_batch,
    reference_run,
    reference_stats,
)
from torch import nn

from efl_d2.losses import (
    EqualizedFocalLoss,
    GradientSink,
    focal_family_loss,
    summarize_category_statistics,
)


def run_module(crit, batches, normalizers, dtype=torch.float32):
    losses = []
    for x, gt in batches:
        xa = x.to(dtype).requires_grad_(True)
        loss = crit(xa, gt, normalizers[len(losses)])
        loss.backward()
        losses.append(loss.detach().double())
    return torch.stack(losses)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.usefixtures("chunking")
def test_statistics_over_several_steps_match_reference(variant):
    build, params_fn = VARIANTS[variant]
    batches = [make_batch(seed=s) for s in range(4)]
    normalizers = [3.0, 5.0, 1.0, 2.5]
    crit = build().train()
    losses = run_module(crit, batches, normalizers)
    ref_losses, pos_grad, neg_grad, pos_neg = reference_run(batches, normalizers, params_fn)
    # Step k's loss uses the g of steps < k, so equal losses show when g is updated and used.
    torch.testing.assert_close(losses, ref_losses, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(crit.pos_grad.double(), pos_grad, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(crit.neg_grad.double(), neg_grad, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(crit.pos_neg.double(), pos_neg, rtol=2e-5, atol=1e-7)
    assert crit.pos_grad.dtype == crit.neg_grad.dtype == crit.pos_neg.dtype == torch.float32


def test_one_step_statistics_are_autograd_sums_and_first_step_is_focal():
    x, gt = make_batch(seed=3)
    crit = EqualizedFocalLoss(C)
    xa = x.clone().requires_grad_(True)
    loss = crit(xa, gt, 4.0)
    loss.backward()
    gamma, pw, nw = efl_params(torch.ones(C))  # g = 1: plain focal loss
    ref_loss, _, pos, neg = reference_stats(x, gt, gamma, pw, nw, 4.0)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    # The statistics are the column sums of |grad| of the returned value, split by target.
    y = torch.zeros(x.shape[0], C + 1)
    y[(gt >= 0).nonzero().squeeze(1), gt[gt >= 0]] = 1
    y = y[:, :C]
    torch.testing.assert_close(crit.pos_grad, (xa.grad.abs() * y).sum(0), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(crit.pos_grad.double(), pos, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(crit.neg_grad.double(), neg, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(crit.pos_neg, (crit.pos_grad / (crit.neg_grad + 1e-10)).clamp(0, 1))
    # The second forward uses the new g: no longer the focal loss.
    second = crit(x, gt, 4.0)
    ref2, _, _, _ = reference_stats(x, gt, *efl_params(crit.pos_neg), 4.0)
    torch.testing.assert_close(second.double(), ref2, rtol=1e-5, atol=1e-6)
    assert abs(second.item() - loss.item()) > 1e-3


def test_kernel_feeds_any_gradient_sink_through_its_one_method():
    """The sink interface is ``add_gradient_sums(pos, neg, finite)`` and nothing else: a plain
    object with only that method receives the float64 reference sums, once per backward."""

    class RecordingSink:
        def __init__(self):
            self.calls = []

        def add_gradient_sums(self, pos, neg, finite):
            self.calls.append((pos.clone(), neg.clone(), bool(finite)))

    x, gt = make_batch(seed=5)
    gamma, pw, nw = efl_params(torch.rand(C, generator=torch.Generator().manual_seed(1)))
    sink = RecordingSink()
    xa = x.clone().requires_grad_(True)
    loss = focal_family_loss(
        xa, gt, gamma=gamma.float(), pos_weight=pw.float(), neg_weight=nw.float(),
        normalizer=3.0, statistics=sink,
    )  # fmt: skip
    assert sink.calls == []  # nothing before the backward
    (2.0 * loss).backward()  # an upstream weight does not enter the statistics
    _, _, pos, neg = reference_stats(x, gt, gamma, pw, nw, 3.0)
    ((got_pos, got_neg, finite),) = sink.calls
    assert finite and got_pos.shape == got_neg.shape == (C,)
    torch.testing.assert_close(got_pos.double(), pos, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got_neg.double(), neg, rtol=1e-5, atol=1e-7)
    assert isinstance(EqualizedFocalLoss(C), GradientSink)  # the losses implement it


def test_eval_no_grad_and_detached_forwards_leave_statistics_untouched():
    x, gt = make_batch()
    crit = EqualizedFocalLoss(C)
    crit(x.clone().requires_grad_(True), gt, 1.0).backward()  # some non-trivial state
    before = {k: v.clone() for k, v in crit.state_dict().items()}

    crit.eval()
    xa = x.clone().requires_grad_(True)
    crit(xa, gt, 1.0).backward()  # eval mode still returns gradients ...
    assert xa.grad.abs().sum() > 0
    crit.train()
    with torch.no_grad():
        crit(x, gt, 1.0)
    crit(x, gt, 1.0)  # logits that do not require grad: nothing to collect
    for k, v in crit.state_dict().items():  # ... but no statistics
        assert torch.equal(v, before[k]), k
    assert not crit.has_pending_statistics()


def test_background_only_adds_to_neg_and_class_k_only_to_pos_k():
    x = torch.randn(30, C) * 2
    crit = EqualizedFocalLoss(C)
    crit(x.clone().requires_grad_(True), torch.full((30,), C), 2.0).backward()
    assert torch.equal(crit.pos_grad, torch.zeros(C))
    assert (crit.neg_grad > 0).all()
    crit = EqualizedFocalLoss(C)
    k = 3
    crit(x.clone().requires_grad_(True), torch.full((30,), k), 2.0).backward()
    assert crit.pos_grad[k] > 0
    assert torch.equal(crit.pos_grad[torch.arange(C) != k], torch.zeros(C - 1))
    assert crit.neg_grad[k] == 0 and (crit.neg_grad[torch.arange(C) != k] > 0).all()


def test_ignored_rows_are_excluded_from_statistics():
    x, gt = make_batch(ignore=False)
    gt_ign = gt.clone()
    gt_ign[::3] = -1
    keep = gt_ign >= 0
    a, b = EqualizedFocalLoss(C), EqualizedFocalLoss(C)
    x_nan = x.clone()
    x_nan[::3] = float("nan")  # whatever ignored rows hold must not reach the statistics
    a(x_nan.requires_grad_(True), gt_ign, 2.0).backward()
    b(x[keep].clone().requires_grad_(True), gt[keep], 2.0).backward()
    torch.testing.assert_close(a.pos_grad, b.pos_grad)
    torch.testing.assert_close(a.neg_grad, b.neg_grad)


def test_grad_scaler_scaled_backward_gives_identical_statistics():
    x, gt = make_batch()
    plain, scaled = EqualizedFocalLoss(C), EqualizedFocalLoss(C)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    for step in range(2):
        xa = x.clone().requires_grad_(True)
        plain(xa, gt, 3.0).backward()
        xb = x.clone().requires_grad_(True)
        scaler.scale(scaled(xb, gt, 3.0)).backward()
        torch.testing.assert_close(xb.grad, xa.grad * 2.0**16)
    for name in ("pos_grad", "neg_grad", "pos_neg"):
        assert torch.equal(getattr(plain, name), getattr(scaled, name)), name


def _state(crit):
    return {k: v.clone() for k, v in crit.state_dict().items()}


def _assert_state_equal(crit, state):
    for k, v in crit.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize(
    "case", ["inf-upstream", "nan-upstream", "nan-logits", "fp16-negatives", "fp16-positive"]
)
def test_non_finite_step_is_skipped(case):
    x, gt = make_batch(big=False)
    crit, ref = EqualizedFocalLoss(C), EqualizedFocalLoss(C)
    for m in (crit, ref):  # one normal step first
        m(x.clone().requires_grad_(True), gt, 2.0).backward()
    state = _state(crit)

    if case.startswith("fp16"):
        # A GradScaler-like scale that overflows the fp16 gradient, either only in negative
        # elements (all rows background) or only in one positive element.
        xa, gt_bad = x.clone(), torch.full_like(gt, C)
        if case == "fp16-positive":
            gt_bad[:] = -1
            gt_bad[0] = 0
            xa[0] = torch.tensor([-5.0, -20.0, -20.0, -20.0, -20.0])
        xa = xa.half().requires_grad_(True)
        (crit(xa, gt_bad, 0.5) * 2.0**24).backward()
        bad = ~torch.isfinite(xa.grad)
        assert bad.any() and (case == "fp16-negatives" or bad.sum() == 1)
    else:
        xa = x.clone()
        if case == "nan-logits":
            xa[4, 1] = float("nan")
        xa.requires_grad_(True)
        scale = {"inf-upstream": float("inf"), "nan-upstream": float("nan")}.get(case, 1.0)
        (crit(xa, gt, 2.0) * scale).backward()
    assert not torch.isfinite(xa.grad).all()  # the scenario really is non-finite
    _assert_state_equal(crit, state)

    # The next finite step accumulates as if the skipped one never happened.
    x2, gt2 = make_batch(seed=7, big=False)
    for m in (crit, ref):
        m(x2.clone().requires_grad_(True), gt2, 2.0).backward()
    _assert_state_equal(crit, _state(ref))


def test_bf16_autocast_statistics_match_fp32():
    torch.manual_seed(0)
    head = nn.Linear(16, C)
    feats = torch.randn(64, 16) * 2
    gt = torch.randint(0, C + 1, (64,))
    fp32, amp = EqualizedFocalLoss(C), EqualizedFocalLoss(C)
    for _ in range(3):
        fp32(head(feats), gt, 4.0).backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = head(feats)
            assert logits.dtype == torch.bfloat16
            loss = amp(logits, gt, 4.0)
        assert loss.dtype == torch.float32
        loss.backward()
    # bf16 logits carry ~3 significant digits; the statistics follow them closely.
    for name in ("pos_grad", "neg_grad", "pos_neg"):
        torch.testing.assert_close(getattr(amp, name), getattr(fp32, name), rtol=3e-2, atol=1e-4)


class _Toy(nn.Module):
    """A linear classifier with an EFL loss, as the detector would hold it."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(8, C)
        self.cls_loss = EqualizedFocalLoss(C)

    def forward(self, data):
        feats, gt, norm = data
        return {"loss_cls": self.cls_loss(self.linear(feats), gt, norm)}


def _toy_batches(n):
    gen = torch.Generator().manual_seed(11)
    return [
        (torch.randn(32, 8, generator=gen) * 3, torch.randint(-1, C + 1, (32,), generator=gen), 4.0)
        for _ in range(n)
    ]


def _train(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for data in batches:
        opt.zero_grad()
        model(data)["loss_cls"].backward()
        opt.step()


def test_checkpoint_round_trip_and_resume(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    batches = _toy_batches(5)
    full = _Toy(seed=0)
    _train(full, batches)

    first = _Toy(seed=0)
    _train(first, batches[:3])
    assert {"cls_loss.pos_grad", "cls_loss.neg_grad", "cls_loss.pos_neg"} <= set(first.state_dict())
    DetectionCheckpointer(first, save_dir=str(tmp_path)).save("model_0002")

    resumed = _Toy(seed=1)  # different init: everything must come from the checkpoint
    DetectionCheckpointer(resumed).load(str(tmp_path / "model_0002.pth"))
    for k, v in first.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    _train(resumed, batches[3:])
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_summary_and_hook_log_group_means():
    from detectron2.engine import SimpleTrainer

    from efl_d2.engine.efl_stats_hook import EFLStatsHook

    freqs = ["f", "f", "c", "r", "r"]
    model = _Toy(seed=0)
    data = itertools.cycle(_toy_batches(3))
    trainer = SimpleTrainer(model, data, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.register_hooks([EFLStatsHook(model, class_frequencies=freqs, period=2)])
    trainer.train(0, 5)

    g = model.cls_loss.pos_neg.double()
    gamma = 2.0 + 8.0 * (1 - g)
    expected = {
        "g_r": g[3:].mean(),
        "g_c": g[2],
        "g_f": g[:2].mean(),
        "g_mean": g.mean(),
        "gamma_r": gamma[3:].mean(),
        "gamma_f": gamma[:2].mean(),
        "weight_c": gamma[2] / 2.0,
    }
    summary = summarize_category_statistics(model.cls_loss, freqs)
    history = trainer.storage.histories()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value.item(), rel=1e-6), key
        # Logged at iterations 1, 3 and the last one (4): the latest value is the final state.
        assert history[f"efl/{key}"].latest() == pytest.approx(value.item(), rel=1e-6), key
    assert [it for _, it in history["efl/g_r"].values()] == [1, 3, 4]
    assert 0 < g.min() < 1  # the run really moved g away from its initial value

    with pytest.raises(ValueError, match="5 classes"):
        summarize_category_statistics(model.cls_loss, freqs[:4])
