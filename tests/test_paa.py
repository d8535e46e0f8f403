"""PAA: the mixture fit against sklearn, the reassignment against a loop reference, assignment
costs and score voting in closed form, inference scores, training (yacs: test_modeling_configs)."""

import math
import warnings

import numpy as np
import pytest
import torch
from _atss_references import make_atss, make_batch, make_paa, train_on_fixed_batch
from detectron2.structures import Boxes, Instances, pairwise_iou
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch.nn import functional as F

from efl_d2.losses import EqualizedFocalLoss
from efl_d2.modeling.paa import fit_two_gaussians, score_voting, summed_focal_loss


def sklearn_paa_fit(costs):
    """PAA's call of sklearn (mmdetection's paa_head): predict and score_samples, float64."""
    x = np.asarray(costs, dtype=np.float64).reshape(-1, 1)
    gmm = GaussianMixture(
        2,
        weights_init=[0.5, 0.5],
        means_init=[[x.min()], [x.max()]],
        precisions_init=[[1.0], [1.0]],
        covariance_type="diag",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    return gmm.predict(x), gmm.score_samples(x)


def random_rows(rng, count):
    rows = []
    for i in range(count):
        k = int(rng.integers(2, 46))
        if i % 3 == 0:
            rows.append(rng.gamma(2.0, 1.0, k))
        elif i % 3 == 1:  # two clear modes
            rows.append(np.r_[rng.normal(0.5, 0.1, k // 2), rng.normal(3.0, 0.5, k - k // 2)])
        else:
            rows.append(rng.uniform(0.0, 10.0, k))
    rows += [np.array([1.0, 2.0]), np.full(5, 0.7), np.array([0.1, 0.1, 0.1, 5.0])]
    return rows


def test_fit_two_gaussians_equals_sklearn_row_by_row():
    rows = random_rows(np.random.default_rng(0), 90)
    width = max(len(r) for r in rows)
    values = torch.zeros(len(rows), width, dtype=torch.float64)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        # Shuffled, with padding that must not matter: the fit is per row and order-free.
        values[i, : len(r)] = torch.from_numpy(np.random.default_rng(i).permutation(r))
        values[i, len(r) :] = 1e6
        valid[i, : len(r)] = True
    component, log_likelihood = fit_two_gaussians(values, valid)
    assert component.dtype == torch.int64 and log_likelihood.dtype == torch.float64
    for i, r in enumerate(rows):
        x = values[i, : len(r)].numpy()
        expected_component, expected_ll = sklearn_paa_fit(x)
        assert component[i, : len(r)].tolist() == expected_component.tolist(), i
        np.testing.assert_allclose(log_likelihood[i, : len(r)].numpy(), expected_ll, atol=1e-6)


def test_fit_two_gaussians_rejects_bad_rows():
    with pytest.raises(ValueError, match="at least 2"):
        fit_two_gaussians(torch.zeros(2, 3), torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=bool))
    with pytest.raises(ValueError, match=r"\(G, K\)"):
        fit_two_gaussians(torch.zeros(3), torch.ones(3, dtype=torch.bool))


def loop_reference_positives(costs, gt_idxs, levels, topk):
    """PAA's reassignment as described for mmdetection's paa_reassign, one GT at a time."""
    positive = np.zeros(len(costs), dtype=bool)
    for g in np.unique(gt_idxs):
        pooled = []
        for level in np.unique(levels):
            idx = np.flatnonzero((gt_idxs == g) & (levels == level))
            pooled += list(idx[np.argsort(costs[idx], kind="stable")][:topk])
        pooled = np.array(pooled, dtype=int)
        if len(pooled) < 2:
            continue
        pooled = pooled[np.argsort(costs[pooled], kind="stable")]
        component, log_likelihood = sklearn_paa_fit(costs[pooled])
        low = component == 0
        if low.any():
            best = int(np.argmax(log_likelihood[low]))
            positive[pooled[low][: best + 1]] = True
    return positive


@pytest.mark.parametrize("seed", range(4))
def test_select_positives_equals_the_loop_reference(seed):
    rng = np.random.default_rng(seed)
    num_gts, num_levels = 6, 3
    # GT 0 has a single candidate (no fit, no positive); GT 5 has none; the others have up to
    # 14 per level, more than topk = 9, so the per-level cut matters.
    gt_idxs = np.r_[0, rng.integers(1, 5, 150)]
    levels = rng.integers(0, num_levels, len(gt_idxs))
    costs = np.where(rng.random(len(gt_idxs)) < 0.3, rng.normal(0.4, 0.1, len(gt_idxs)), 0.0)
    costs = costs + rng.gamma(2.0, 1.0, len(gt_idxs))
    got = make_paa(topk=9).select_positives(
        torch.tensor(costs, dtype=torch.float32),
        torch.tensor(gt_idxs),
        torch.tensor(levels),
        num_gts,
    )
    # The reference sees the same float32 costs the model does.
    expected = loop_reference_positives(costs.astype(np.float32), gt_idxs, levels, topk=9)
    assert got.tolist() == expected.tolist()
    assert not got[0] and got.any()


def test_select_positives_without_candidates():
    model = make_paa()
    empty = torch.zeros(0, dtype=torch.int64)
    assert model.select_positives(torch.zeros(0), empty, empty, 3).shape == (0,)


@pytest.mark.parametrize("chunk", [7, 1 << 22])
def test_summed_focal_loss_equals_focal_loss_summed_over_classes(chunk):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=gen, dtype=torch.float64) * 4
    gt_classes = torch.randint(7, (50,), generator=gen)
    # Focal loss with a one-hot target, element by element, in float64.
    y = F.one_hot(gt_classes, 7).double()
    p = logits.sigmoid()
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 0.25 * y + 0.75 * (1 - y)
    expected = (-alpha_t * (1 - p_t) ** 2 * p_t.log()).sum(1)
    got = summed_focal_loss(logits, gt_classes, alpha=0.25, gamma=2.0, max_chunk_elements=chunk)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    empty = summed_focal_loss(torch.zeros(0, 7), torch.zeros(0, dtype=torch.int64))
    assert empty.shape == (0,)


def test_assignment_cost_is_summed_focal_plus_weighted_giou():
    model = make_paa(num_classes=3)
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
    anchors = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 50.0, 30.0]])
    deltas = torch.zeros(2, 4)  # decoded boxes = the anchors
    gt_classes = torch.tensor([0, 2])
    gt_boxes = torch.tensor([[5.0, 0.0, 25.0, 20.0], [10.0, 10.0, 50.0, 30.0]])
    got = model.assignment_costs(logits, deltas, anchors, gt_classes, gt_boxes)

    def focal(z, y, alpha=0.25, gamma=2.0):
        p = 1 / (1 + math.exp(-z))
        p_t = p if y else 1 - p
        return -(alpha if y else 1 - alpha) * (1 - p_t) ** gamma * math.log(p_t)

    # Box 0 vs GT 0: intersection 15x20, union 500, hull 25x20 = union: GIoU = IoU = 0.6.
    expected = [
        sum(focal(z, c == 0) for c, z in enumerate([2.0, -1.0, 0.5])) + 1.3 * (1 - 0.6),
        sum(focal(z, c == 2) for c, z in enumerate([-3.0, 0.0, 1.0])) + 1.3 * 0.0,
    ]
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_label_anchors_positives_are_candidates_labelled_with_their_gt():
    model = make_paa(num_classes=4)
    batch = make_batch()
    images = model.preprocess_image(batch)
    features = [model.backbone(images.tensor)[f] for f in model.head_in_features]
    logits, deltas, _ = model.transposed_predictions(model.head(features))
    anchors = model.anchor_generator(features)
    gts = [b["instances"] for b in batch]
    labels, boxes = model.label_anchors(
        anchors, gts, torch.cat(logits, dim=1), torch.cat(deltas, dim=1)
    )
    overlaps = pairwise_iou(gts[0].gt_boxes, Boxes.cat(anchors))  # (2, R)
    pos = (labels[0] != 4).nonzero().squeeze(1)
    assert len(pos) > 0 and (labels[1] == 4).all()  # the second image has no GT
    for r in pos.tolist():
        g = int(overlaps[:, r].argmax())
        assert labels[0][r].item() == gts[0].gt_classes[g].item()
        assert boxes[0][r].tolist() == gts[0].gt_boxes.tensor[g].tolist()
        assert overlaps[g, r] >= 0.1 or overlaps[g, r] == overlaps[g].max()
    assert set(labels[0][pos].tolist()) == {1, 3}  # both GTs have positives


def test_score_voting_closed_form():
    def instances(boxes, scores, classes):
        inst = Instances((100, 100))
        inst.pred_boxes = Boxes(torch.tensor(boxes))
        inst.scores = torch.tensor(scores)
        inst.pred_classes = torch.tensor(classes)
        return inst

    a, b = [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 8.0]  # IoU(a, b) = 0.8
    candidates = instances(
        [a, b, [0.0, 0.0, 10.0, 9.0], [50.0, 50.0, 60.0, 60.0]],
        [0.9, 0.6, 0.7, 0.5],
        [0, 0, 1, 0],  # the 10x9 box has another class; the last one does not overlap
    )
    detections = instances([a, [50.0, 50.0, 60.0, 60.0]], [0.9, 0.5], [0, 0])
    got = score_voting(detections, candidates, sigma=0.025)
    w_a, w_b = 0.9 * math.exp(0.0), 0.6 * math.exp(-(0.2**2) / 0.025)
    expected_first = [(w_a * x + w_b * y) / (w_a + w_b) for x, y in zip(a, b)]
    torch.testing.assert_close(got[0], torch.tensor(expected_first))
    torch.testing.assert_close(got[1], detections.pred_boxes.tensor[1])  # only itself votes
    # The weight factor of the PAA paper / mmdetection: IoU 0.9 -> 0.670320.
    assert math.exp(-(0.1**2) / 0.025) == pytest.approx(0.670320, abs=1e-6)


def test_paa_scores_are_the_square_root_of_atss_scores():
    atss = make_atss(num_classes=4, scales=(8,), topk=9, quality="iou").eval()
    paa = make_paa(num_classes=4, score_voting=False).eval()
    paa.box2box_transform = atss.box2box_transform
    paa.load_state_dict(atss.state_dict())
    image = [{"image": torch.rand(3, 96, 128) * 255}]
    with torch.no_grad():
        a, p = atss(image)[0]["instances"], paa(image)[0]["instances"]
    assert len(p) == len(a) > 0
    torch.testing.assert_close(p.scores, a.scores.sqrt())
    torch.testing.assert_close(p.pred_boxes.tensor, a.pred_boxes.tensor)
    paa.score_voting = True
    with torch.no_grad():
        v = paa(image)[0]["instances"]
    torch.testing.assert_close(v.scores, p.scores)  # voting moves boxes, not scores
    assert not torch.equal(v.pred_boxes.tensor, p.pred_boxes.tensor)


def test_paa_with_efl_trains_on_a_fixed_batch():
    efl = EqualizedFocalLoss(4)
    model = make_paa(num_classes=4, cls_loss=efl)
    totals = train_on_fixed_batch(model, {"loss_cls", "loss_box_reg", "loss_iou"})
    assert sum(totals[-3:]) < 0.8 * sum(totals[:3]), totals
    assert efl.pos_grad[[1, 3]].min() > 0 and efl.pos_grad[[0, 2]].max() == 0


def test_paa_constructor_errors():
    with pytest.raises(ValueError, match="initial_matcher"):
        make_paa(anchor_matcher=lambda *a: None)
    with pytest.raises(ValueError, match="quality must be 'iou'"):
        make_paa(quality="centerness")
    with pytest.raises(ValueError, match="topk"):
        make_paa(topk=0)


def test_fig4_scores_of_paa_use_its_own_assignment():
    """analysis.mean_scores_per_category passes PAA the predictions it assigns from; its
    positives are those of PAA's own assignment."""
    from efl_d2 import analysis

    model = make_paa(num_classes=4)
    batch = make_batch()
    data = analysis.mean_scores_per_category(model, [0, 1], lambda i: batch[i])
    images = model.preprocess_image(batch[:1])
    features = [model.backbone(images.tensor)[f] for f in model.head_in_features]
    logits, deltas, _ = model.transposed_predictions(model.head(features))
    labels = model.label_anchors(
        model.anchor_generator(features),
        [batch[0]["instances"]],
        torch.cat(logits, dim=1),
        torch.cat(deltas, dim=1),
    )[0][0]
    fg = labels[(labels >= 0) & (labels < 4)]
    assert data.num_images == 2 and data.pos_count.sum() == len(fg) > 0
    assert data.pos_count.tolist() == torch.bincount(fg, minlength=4).tolist()
