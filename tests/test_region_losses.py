"""The two-stage (region) losses against float64 references written here from the papers'
formulas and the authors' constants, over several steps where they keep state."""

import math

import pytest
import torch
from torch.nn import functional as F

from efl_d2.losses import BalancedGroupSoftmaxLoss, EQLv2Loss, SeesawLoss, eqlv2_weights

C = 4


def region_batch(seed, rows=24, num_classes=C, extra=1, scale=2.0):
    """(R, C + extra) float64 logits and labels 0..C (a third background), seeded."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, num_classes + extra, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(num_classes, (rows,), generator=g)
    labels[torch.rand(rows, generator=g) < 0.35] = num_classes
    return logits, labels


# --------------------------------------------------------------------------- EQLv2


def eqlv2_reference(z, labels, pos, neg):
    """One EQLv2 step in float64 (Tan et al. 2021, Eqs. 5-8; gamma 12, mu 0.8, alpha 4):
    returns (loss, d loss / d z, new pos, new neg). Element by element, no shared code."""
    rows, cols = z.shape
    c = cols - 1
    loss, grad = 0.0, torch.zeros_like(z)
    new_pos, new_neg = pos.clone(), neg.clone()
    for j in range(cols):
        if j < c:
            no_evidence = pos[j] == 0 and neg[j] == 0
            g = math.inf if no_evidence else pos[j].item() / (neg[j].item() + 1e-10)
            f = 1.0 if g == math.inf else 1.0 / (1.0 + math.exp(-12.0 * (g - 0.8)))
            q, r = 1.0 + 4.0 * (1.0 - f), f
        else:
            q = r = 1.0  # the background column
        for i in range(rows):
            y = 1.0 if labels[i] == j else 0.0
            p = 1.0 / (1.0 + math.exp(-z[i, j].item()))
            w = q if y else r
            loss += w * -(y * math.log(p) + (1 - y) * math.log(1 - p))
            grad[i, j] = w * (p - y) / rows
            if j < c:
                if y:
                    new_pos[j] += w * abs(p - y)
                else:
                    new_neg[j] += w * abs(p - y)
    return loss / rows, grad, new_pos, new_neg


def test_eqlv2_weights_table_of_the_mapping():
    """f(g) = sigmoid(12 (g - 0.8)); q = 1 + 4 (1 - f), r = f."""
    g = torch.tensor([0.0, 0.5, 0.8, 1.0], dtype=torch.float64)
    q, r = eqlv2_weights(g, torch.ones(4, dtype=torch.float64) - 1e-10)
    expected_r = [1 / (1 + math.exp(-12 * (v - 0.8))) for v in g.tolist()]
    torch.testing.assert_close(r, torch.tensor(expected_r, dtype=torch.float64))
    torch.testing.assert_close(q, 1 + 4 * (1 - r))
    assert r[2].item() == pytest.approx(0.5) and q[2].item() == pytest.approx(3.0)
    q0, r0 = eqlv2_weights(torch.zeros(2), torch.zeros(2))  # no statistics yet: plain BCE
    assert torch.equal(q0, torch.ones(2)) and torch.equal(r0, torch.ones(2))


def test_eqlv2_hand_computed_two_steps():
    """z = 0, C = 2, labels [0, background]: step 1 is plain BCE, 3 ln 2 per RoI on average; the
    statistics are |p - y| = 0.5 sums; step 2 uses g = (1, 0)."""
    crit = EQLv2Loss(2)
    z = torch.zeros(2, 3, requires_grad=True)
    loss = crit(z, torch.tensor([0, 2]))
    loss.backward()
    assert loss.item() == pytest.approx(3 * math.log(2))
    assert crit.pos_grad.tolist() == [0.5, 0.0] and crit.neg_grad.tolist() == [0.5, 1.0]
    loss2 = crit(torch.zeros(2, 3, requires_grad=True), torch.tensor([0, 2]))
    f0, f1 = 1 / (1 + math.exp(-12 * 0.2)), 1 / (1 + math.exp(12 * 0.8))
    # row 0 (class 0): q0 on column 0, r1 on column 1, 1 on the background column; row 1: r0, r1, 1
    expected = math.log(2) * ((1 + 4 * (1 - f0)) + f1 + 1 + f0 + f1 + 1) / 2
    assert loss2.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_eqlv2_value_gradient_and_statistics_over_steps(dtype):
    crit = EQLv2Loss(C).train()
    pos = torch.zeros(C, dtype=torch.float64)
    neg = torch.zeros(C, dtype=torch.float64)
    # float64 logits, but the statistics (and so the weights) are float32 buffers
    tol = {"rtol": 1e-6, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    for step in range(4):
        z, labels = region_batch(step)
        ref_loss, ref_grad, pos, neg = eqlv2_reference(z, labels, pos, neg)
        x = z.to(dtype).requires_grad_(True)
        loss = crit(x, labels)
        loss.backward()
        torch.testing.assert_close(
            loss.double(), torch.tensor(ref_loss, dtype=torch.float64), **tol
        )
        torch.testing.assert_close(x.grad.double(), ref_grad, **tol)
        torch.testing.assert_close(crit.pos_grad.double(), pos, rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(crit.neg_grad.double(), neg, rtol=2e-6, atol=1e-6)
    assert (crit.gradient_ratio() > 0).all()


def test_eqlv2_eval_and_no_grad_leave_statistics_and_scores_use_background():
    crit = EQLv2Loss(C)
    z, labels = region_batch(0)
    crit(z.requires_grad_(True), labels).backward()
    before = {k: v.clone() for k, v in crit.state_dict().items()}
    with torch.no_grad():
        crit(z, labels)
    crit.eval()
    crit(z.detach().requires_grad_(True), labels).backward()
    for k, v in crit.state_dict().items():
        assert torch.equal(v, before[k]), k
    p = torch.sigmoid(z.detach())
    probs = crit.probabilities(z)
    assert probs.shape == (z.shape[0], C + 1)
    torch.testing.assert_close(probs[:, :C], (p[:, :C] * (1 - p[:, C:])).float())


def test_eqlv2_bf16_autocast_statistics_match_fp32():
    z, labels = region_batch(3)
    a, b = EQLv2Loss(C), EQLv2Loss(C)
    for step in range(3):
        z, labels = region_batch(step)
        a(z.float().requires_grad_(True), labels).backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = z.bfloat16().requires_grad_(True)
            b(x, labels).backward()
        assert x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(b.pos_grad, a.pos_grad, rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(b.neg_grad, a.neg_grad, rtol=2e-2, atol=1e-3)


def test_eqlv2_loss_scaled_backward_gives_identical_statistics():
    """A GradScaler multiplies the loss before backward: the statistics must not see it."""
    plain, scaled = EQLv2Loss(C), EQLv2Loss(C)
    for step in range(3):
        z, labels = region_batch(step)
        plain(z.float().requires_grad_(True), labels).backward()
        (scaled(z.float().requires_grad_(True), labels) * 1024.0).backward()
    assert torch.equal(plain.pos_grad, scaled.pos_grad)
    assert torch.equal(plain.neg_grad, scaled.neg_grad)


def test_eqlv2_non_finite_step_is_skipped():
    crit = EQLv2Loss(C)
    z, labels = region_batch(0)
    crit(z.requires_grad_(True), labels).backward()
    before = crit.pos_grad.clone(), crit.neg_grad.clone()
    bad = z.detach().clone()
    bad[0, 0] = float("nan")
    crit(bad.requires_grad_(True), labels)
    assert torch.equal(crit.pos_grad, before[0]) and torch.equal(crit.neg_grad, before[1])


def test_eqlv2_resume_is_exact(tmp_path):
    """Stop after 2 of 4 steps, save, load into a fresh loss: steps 3-4 equal the uninterrupted
    run bit for bit."""
    straight, first = EQLv2Loss(C), EQLv2Loss(C)
    for step in range(4):
        z, labels = region_batch(step)
        straight(z.float().requires_grad_(True), labels).backward()
        if step < 2:
            first(z.float().requires_grad_(True), labels).backward()
    torch.save(first.state_dict(), tmp_path / "loss.pth")
    resumed = EQLv2Loss(C)
    resumed.load_state_dict(torch.load(tmp_path / "loss.pth", weights_only=True))
    for step in (2, 3):
        z, labels = region_batch(step)
        resumed(z.float().requires_grad_(True), labels).backward()
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


# --------------------------------------------------------------------------- Seesaw


def seesaw_reference(z, labels, counts, p=0.8, q=2.0, eps=1e-2):
    """Seesaw loss in float64, sample by sample (Wang et al. 2021, Eqs. 2-5; the objectness term
    of the authors' two-branch head): (loss classes, loss objectness), both / R."""
    rows = z.shape[0]
    c = z.shape[1] - 2
    total_cls = z.new_zeros(())
    total_obj = z.new_zeros(())
    for i in range(rows):
        k = int(labels[i])
        obj = z[i, c:]
        target = 0 if k < c else 1
        total_obj = total_obj - (obj[target] - torch.logsumexp(obj, 0))
        if k == c:
            continue
        zi = z[i, :c]
        s = torch.softmax(zi.detach(), 0)
        denom = torch.exp(zi[k])
        for j in range(c):
            if j == k:
                continue
            nj, nk = max(counts[j], 1.0), max(counts[k], 1.0)
            m = (nj / nk) ** p if nj < nk else 1.0
            ratio = (s[j] / max(s[k].item(), eps)).item()
            comp = ratio**q if ratio > 1 else 1.0
            denom = denom + m * comp * torch.exp(zi[j])
        total_cls = total_cls - (zi[k] - torch.log(denom))
    return total_cls / rows, total_obj / rows


def test_seesaw_hand_computed_cases():
    """C = 3, counts (1000, 100, 10) after the batch: mitigation only; then a batch whose
    negative is scored above its class: compensation e^6 for class 0."""
    crit = SeesawLoss(3)
    crit.cum_samples[:3] = torch.tensor([999.0, 99.0, 9.0])  # + one of each in the batch
    z = torch.tensor([[2, 1, 0.5, 0, 0], [0, 3, 1, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.float64)
    out = crit(z, torch.tensor([0, 1, 2]))
    m01, m02 = 0.1**0.8, 0.01**0.8
    row0 = -math.log(math.exp(2) / (math.exp(2) + m01 * math.exp(1) + m02 * math.exp(0.5)))
    row1 = -math.log(math.exp(3) / (math.exp(3) + math.exp(0) + m01 * math.exp(1)))
    row2 = math.log(3)
    assert out["loss_cls_classes"].item() == pytest.approx((row0 + row1 + row2) / 3, rel=1e-9)
    assert out["loss_cls_objectness"].item() == pytest.approx(math.log(2), rel=1e-9)
    assert crit.cum_samples.tolist() == [1000.0, 100.0, 10.0, 0.0]

    crit = SeesawLoss(3)
    crit.cum_samples[:3] = torch.tensor([1000.0, 99.0, 10.0])
    z = torch.tensor([[3, 0, 1, 0, 0]], dtype=torch.float64)
    s = torch.softmax(z[0, :3], 0)
    assert (s[0] / s[1]).item() ** 2 == pytest.approx(math.exp(6))
    comp = [math.exp(6), 1.0, (s[2] / s[1]).item() ** 2]
    mitig = [1.0, 1.0, 0.1**0.8]  # class 2 is rarer than class 1, class 0 is not
    denom = math.exp(0) + comp[0] * math.exp(3) + mitig[2] * comp[2] * math.exp(1)
    out = crit(z, torch.tensor([1]))
    assert out["loss_cls_classes"].item() == pytest.approx(-math.log(1 / denom), rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_seesaw_value_and_gradient_over_steps(dtype):
    crit = SeesawLoss(C).train()
    counts = torch.zeros(C + 1, dtype=torch.float64)
    tol = {"rtol": 1e-9, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    for step in range(4):
        z, labels = region_batch(step, extra=2, scale=3.0)
        counts += torch.bincount(labels, minlength=C + 1).double()
        ref = z.clone().requires_grad_(True)
        ref_cls, ref_obj = seesaw_reference(ref, labels, counts.tolist())
        (ref_cls + ref_obj).backward()
        x = z.to(dtype).requires_grad_(True)
        out = crit(x, labels)
        (out["loss_cls_classes"] + out["loss_cls_objectness"]).backward()
        torch.testing.assert_close(out["loss_cls_classes"].double(), ref_cls.detach(), **tol)
        torch.testing.assert_close(out["loss_cls_objectness"].double(), ref_obj.detach(), **tol)
        torch.testing.assert_close(x.grad.double(), ref.grad, **tol)
        assert torch.equal(crit.cum_samples.double(), counts)


def test_seesaw_counts_only_in_training_checkpointed_and_scores_are_probabilities():
    crit = SeesawLoss(C)
    z, labels = region_batch(1, extra=2)
    crit(z, labels)
    counted = crit.cum_samples.clone()
    crit.eval()
    crit(z, labels)
    assert torch.equal(crit.cum_samples, counted) and "cum_samples" in crit.state_dict()
    probs = crit.probabilities(z)
    assert probs.shape == (z.shape[0], C + 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(z.shape[0]))
    obj = torch.softmax(z[:, C:].float(), 1)
    torch.testing.assert_close(probs[:, C], obj[:, 1])
    torch.testing.assert_close(probs[:, :C], torch.softmax(z[:, :C].float(), 1) * obj[:, :1])


def test_seesaw_without_foreground_and_with_p_q_zero_is_cross_entropy():
    z, _ = region_batch(2, extra=2)
    out = SeesawLoss(C)(z, torch.full((z.shape[0],), C))
    assert out["loss_cls_classes"].item() == 0.0
    labels = torch.tensor([0, 1, 2, 3] * 6)
    out = SeesawLoss(C, p=0.0, q=0.0)(z, labels)
    ce = F.cross_entropy(z[:, :C], labels)
    torch.testing.assert_close(out["loss_cls_classes"], ce)


@pytest.mark.parametrize("loss", [EQLv2Loss, SeesawLoss])
def test_region_losses_reject_bad_input(loss):
    crit = loss(C)
    z = torch.zeros(3, crit.num_logits)
    with pytest.raises(ValueError, match="columns"):
        crit(torch.zeros(3, C), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        crit(z, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="integer"):
        crit(z, torch.zeros(3))


# --------------------------------------------------------------------------- BAGS

# 6 classes: instance counts put 0, 4 in bin (0, 10); 1 in [10, 100); 2, 5 in [100, 1000); 3 in
# [1000, inf): groups [0, 4], [1], [2, 5], [3]; logits: [bg, fg] + 3 + 2 + 3 + 2 = 12 = C + 2 + 4
BAGS_COUNTS = [3, 50, 200, 5000, 9, 999]


def bags_reference(z, labels, groups, kept_others):
    """BAGS in float64 (Li et al. 2020, Eqs. 2-3): per group, softmax cross entropy over
    [others, its classes] of the in-group RoIs and of ``kept_others[g]`` (row indices), averaged
    over them; background group over all RoIs."""
    c = sum(len(m) for m in groups)
    rows = z.shape[0]
    terms = []
    bg = sum(-torch.log_softmax(z[i, :2], 0)[int(labels[i] < c)] for i in range(rows)) / rows
    terms.append(bg)
    start = 2
    for g, members in enumerate(groups):
        width = 1 + len(members)
        inside = [i for i in range(rows) if int(labels[i]) in members]
        if not inside:
            terms.append(z.new_zeros(()))
        else:
            total = z.new_zeros(())
            for i in inside + list(kept_others[g]):
                target = 1 + members.index(int(labels[i])) if i in inside else 0
                total = total - torch.log_softmax(z[i, start : start + width], 0)[target]
            terms.append(total / (len(inside) + len(kept_others[g])))
        start += width
    return terms


def test_bags_groups_layout_and_value_with_every_other_kept():
    crit = BalancedGroupSoftmaxLoss(6, instance_counts=BAGS_COUNTS, others_ratio=1000.0)
    assert crit.groups == [[0, 4], [1], [2, 5], [3]] and crit.num_logits == 12
    assert crit.class_column.tolist() == [3, 6, 8, 11, 4, 9]
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20, 12, generator=g, dtype=torch.float64) * 2
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6, 6, 2, 3, 3, 6, 0, 6, 5, 6, 6, 1, 6])
    x = z.clone().requires_grad_(True)
    out = crit(x, labels)
    assert list(out) == [f"loss_cls_group{k}" for k in range(5)]
    group_of = {0: 0, 4: 0, 1: 1, 2: 2, 5: 2, 3: 3}
    others = [[i for i in range(20) if group_of.get(int(labels[i])) != g] for g in range(4)]
    ref_z = z.clone().requires_grad_(True)
    ref = bags_reference(ref_z, labels, crit.groups, others)
    for got, expected in zip(out.values(), ref):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    sum(out.values()).backward()
    sum(ref).backward()
    torch.testing.assert_close(x.grad, ref_z.grad, rtol=1e-12, atol=1e-12)


def test_bags_samples_others_at_the_ratio_and_skips_groups_without_roi():
    crit = BalancedGroupSoftmaxLoss(6, instance_counts=BAGS_COUNTS, others_ratio=2.0)
    z = torch.randn(30, 12, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1] + [6] * 29)  # one RoI of class 1 (group 2), the rest background
    torch.manual_seed(0)
    out = crit(z, labels)
    for k in (1, 3, 4):  # no RoI of those groups: no loss, no gradient
        assert out[f"loss_cls_group{k}"].item() == 0.0
    out["loss_cls_group2"].backward()
    rows = (z.grad[:, 5:7].abs().sum(1) > 0).nonzero().squeeze(1).tolist()
    assert 0 in rows and len(rows) == 1 + 2  # the RoI and int(2.0 * 1) others
    assert z.grad[:, :5].abs().sum() == 0 and z.grad[:, 7:].abs().sum() == 0


def test_bags_scores_are_group_probability_times_foreground():
    crit = BalancedGroupSoftmaxLoss(6, instance_counts=BAGS_COUNTS)
    z = torch.randn(4, 12, dtype=torch.float64)
    probs = crit.probabilities(z)
    fg = torch.softmax(z[:, :2].float(), 1)
    torch.testing.assert_close(probs[:, 6], fg[:, 0])
    group = torch.softmax(z[:, 7:10].float(), 1)  # [others, class 2, class 5]
    torch.testing.assert_close(probs[:, 2], group[:, 1] * fg[:, 1])
    torch.testing.assert_close(probs[:, 5], group[:, 2] * fg[:, 1])
    single = torch.softmax(z[:, 5:7].float(), 1)  # [others, class 1]
    torch.testing.assert_close(probs[:, 1], single[:, 1] * fg[:, 1])
    with pytest.raises(ValueError, match="entries"):
        BalancedGroupSoftmaxLoss(6, instance_counts=[1, 2])
