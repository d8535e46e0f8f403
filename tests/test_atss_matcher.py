"""ATSSMatcher: hand-computed cases and a brute-force float64 reference on random inputs."""

import math
import statistics

import pytest
import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes

from efl_d2.modeling import ATSSMatcher

# --------------------------------------------------------------------------- reference


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _center(b):
    return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)


def reference_atss(anchors_per_level, gt_boxes, topk, margin=0.01):
    """Plain-Python ATSS, one GT and one level at a time; ties -> lower anchor / GT index."""
    levels = [a.tolist() for a in anchors_per_level]
    anchors = [a for level in levels for a in level]
    gts = gt_boxes.tolist()
    best = [(-math.inf, -1)] * len(anchors)  # (iou, gt index) of the best positive pair
    for g, gt in enumerate(gts):
        if not (gt[2] > gt[0] and gt[3] > gt[1]):
            continue
        gc = _center(gt)
        candidates, offset = [], 0
        for level in levels:
            dist = [math.dist(_center(a), gc) for a in level]
            nearest = sorted(range(len(level)), key=lambda i: (dist[i], i))[:topk]
            candidates += [offset + i for i in nearest]
            offset += len(level)
        ious = [_iou(anchors[i], gt) for i in candidates]
        if len(ious) < 2:
            continue  # unbiased std undefined -> no positives
        threshold = statistics.fmean(ious) + statistics.stdev(ious)
        for i, iou in zip(candidates, ious):
            cx, cy = _center(anchors[i])
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > margin
            if iou >= threshold and inside and iou > best[i][0]:  # strict: lower GT wins ties
                best[i] = (iou, g)
    labels = [int(g >= 0) for _, g in best]
    matched = [max(g, 0) for _, g in best]
    return torch.tensor(matched), torch.tensor(labels)


def grid_anchors(image_hw, strides, scales, offset=0.5):
    gen = DefaultAnchorGenerator(
        sizes=[[k * s for k in scales] for s in strides],
        aspect_ratios=[1.0],
        strides=strides,
        offset=offset,
    )
    feats = [
        torch.zeros(1, 1, math.ceil(image_hw[0] / s), math.ceil(image_hw[1] / s)) for s in strides
    ]
    return [a.tensor.double() for a in gen(feats)]


def random_gt(gen, num, image_hw, num_degenerate=0):
    h, w = image_hw
    xy = torch.rand(num, 2, generator=gen, dtype=torch.float64) * torch.tensor([w, h])
    wh = torch.rand(num, 2, generator=gen, dtype=torch.float64) * torch.tensor([w, h]) * 0.6 + 0.5
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:num_degenerate, 2] = boxes[:num_degenerate, 0]  # zero width
    return boxes[torch.randperm(num, generator=gen)]


def assert_same_assignment(got, expected):
    matched, labels = got
    exp_matched, exp_labels = expected
    assert labels.dtype == torch.int64 and matched.dtype == torch.int64
    assert torch.equal(labels, exp_labels), (
        labels.nonzero().flatten(),
        exp_labels.nonzero().flatten(),
    )
    fg = labels == 1
    assert torch.equal(matched[fg], exp_matched[fg])


# --------------------------------------------------------------------------- hand-made cases


def test_issue_example_only_first_prior_is_foreground():
    priors = torch.tensor(
        [[0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [32, 32, 38, 42]]
    ).float()
    gts = torch.tensor([[0, 0, 10, 9], [0, 10, 10, 19]]).float()
    matched, labels = ATSSMatcher(topk=9)([priors], gts)
    assert labels.tolist() == [1, 0, 0, 0]
    assert matched[0].item() == 0
    # Prior 2 passes GT 1's IoU threshold but its centre (10, 10) is on GT 1's top edge.
    assert_same_assignment((matched, labels), reference_atss([priors], gts, topk=9))


def _edge_case(center_x):
    """One 16x16 GT, a 16x16 anchor centred at (center_x, 8) and three far anchors."""
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    near = torch.tensor([[center_x - 8, 0.0, center_x + 8, 16.0]], dtype=torch.float64)
    far = torch.tensor([[100.0, 100, 116, 116], [200, 0, 216, 16], [0, 200, 16, 216]]).double()
    return [torch.cat([near, far])], gt


@pytest.mark.parametrize(
    "center_x, positive",
    [
        (0.0, False),
        (2.0**-7, False),
        (2.0**-6, True),
        (16.0 - 2.0**-7, False),
        (16 - 2.0**-6, True),
    ],
)
def test_anchor_center_must_be_inside_gt_by_more_than_0_01(center_x, positive):
    # 2^-7 < 0.01 < 2^-6, all exact in binary; the IoU (~1/3) is always above mean + std.
    anchors, gt = _edge_case(center_x)
    _matched, labels = ATSSMatcher(topk=9)(anchors, gt)
    assert labels.tolist() == [int(positive), 0, 0, 0]


@pytest.mark.parametrize(
    "center_x, positive",
    [
        (0.25, False),  # inside by 0.25 px: positive for Detectron2's test, not the official one
        (0.5 + 2.0**-7, False),  # official: (cx - 0.5) - x1 = 2^-7 < 0.01
        (0.5 + 2.0**-6, True),
        (15.5 - 2.0**-7, False),  # official: (x2 - 1) - (cx - 0.5) = 2^-7
        (15.5 - 2.0**-6, True),
    ],
)
def test_official_center_inside_is_half_a_pixel_stricter(center_x, positive):
    # The official code measures in inclusive pixels: anchor centre cx - 0.5, GT x2 = 16 - 1.
    anchors, gt = _edge_case(center_x)
    official = ATSSMatcher(topk=9, center_convention="official")(anchors, gt)[1]
    assert official.tolist() == [int(positive), 0, 0, 0]
    assert ATSSMatcher(topk=9)(anchors, gt)[1].tolist() == [1, 0, 0, 0]


def test_unknown_center_convention_is_an_error():
    with pytest.raises(ValueError, match="center_convention"):
        ATSSMatcher(center_convention="mmdet")


def test_inside_margin_is_strict():
    anchors, gt = _edge_case(0.25)  # margin exactly 0.25: not "more than" 0.25
    assert ATSSMatcher(topk=9, center_margin=0.25)(anchors, gt)[1][0] == 0
    anchors, gt = _edge_case(0.375)
    assert ATSSMatcher(topk=9, center_margin=0.25)(anchors, gt)[1][0] == 1


def test_iou_equal_to_threshold_is_positive():
    # Two candidates with the same IoU 0.5: threshold = 0.5 + 0 (exact), IoU >= threshold.
    anchors = [torch.tensor([[0.0, 0, 8, 16], [8, 0, 16, 16]])]
    _matched, labels = ATSSMatcher(topk=9)(anchors, torch.tensor([[0.0, 0, 16, 16]]))
    assert labels.tolist() == [1, 1]


def test_zero_gt_gives_all_background():
    anchors = grid_anchors((64, 64), [8, 16], [8])
    matched, labels = ATSSMatcher(topk=9)(anchors, torch.zeros(0, 4, dtype=torch.float64))
    assert labels.shape == matched.shape == (sum(len(a) for a in anchors),)
    assert labels.dtype == matched.dtype == torch.int64
    assert labels.sum() == 0


def test_empty_anchors():
    gts = torch.tensor([[0.0, 0, 10, 10]])
    matched, labels = ATSSMatcher(topk=9)([torch.zeros(0, 4)], gts)
    assert labels.shape == matched.shape == (0,)
    # An empty level among non-empty ones is skipped.
    level = torch.tensor([[0.0, 0, 10, 10], [40, 40, 50, 50], [60, 60, 70, 70]])
    matched, labels = ATSSMatcher(topk=9)([torch.zeros(0, 4), level], gts)
    assert labels.tolist() == [1, 0, 0] and matched[0] == 0


def test_degenerate_gt_is_ignored_and_indices_refer_to_original_gts():
    anchors = grid_anchors((64, 64), [8, 16], [6, 8])
    valid = torch.tensor([[10.0, 12, 40, 50]], dtype=torch.float64)
    degenerate = torch.tensor([[20.0, 20, 20, 60], [5, 30, 45, 30]], dtype=torch.float64)
    matcher = ATSSMatcher(topk=18)
    only_valid = matcher(anchors, valid)
    matched, labels = matcher(anchors, torch.cat([degenerate, valid]))
    assert labels.sum() > 0
    assert torch.equal(labels, only_valid[1])
    assert (matched[labels == 1] == 2).all()
    assert matcher(anchors, degenerate)[1].sum() == 0


def _two_gt_case(gt_a, gt_b):
    anchors = torch.tensor(
        [[0.0, 0, 10, 10], [100, 100, 110, 110], [200, 0, 210, 10], [0, 200, 10, 210]]
    ).double()
    return [anchors], torch.tensor([gt_a, gt_b], dtype=torch.float64)


def test_anchor_positive_for_two_gts_takes_highest_iou():
    high, low = [0.0, 0, 10, 11], [0.0, 0, 12, 10]  # IoU with anchor 0: 10/11 and 10/12
    for order, expected_gt in (((high, low), 0), ((low, high), 1)):
        anchors, gts = _two_gt_case(*order)
        matched, labels = ATSSMatcher(topk=9)(anchors, gts)
        assert labels.tolist() == [1, 0, 0, 0]
        assert matched[0].item() == expected_gt


def test_equal_iou_for_two_gts_takes_lower_gt_index():
    anchors, gts = _two_gt_case([0.0, 0, 10, 12], [0.0, 0, 12, 10])  # both IoU 10/12
    matched, labels = ATSSMatcher(topk=9)(anchors, gts)
    assert labels[0] == 1 and matched[0] == 0


def test_candidates_are_chosen_per_level():
    # Level 1's anchors are far from the GT (IoU 0) but they are level 1's nearest, so they are
    # candidates and lower the GT's threshold: anchor 0 (IoU 10/11) becomes positive. Taking the
    # topk=2 nearest over all levels instead would give no positive (threshold ~0.94).
    level0 = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]]).double()
    level1 = torch.tensor([[60.0, 60, 70, 70], [80, 80, 90, 90]]).double()
    gt = torch.tensor([[0.0, 0, 11, 10]]).double()
    got = ATSSMatcher(topk=2)([level0, level1], gt)
    assert got[1].tolist() == [1, 0, 0, 0, 0]
    assert_same_assignment(got, reference_atss([level0, level1], gt, topk=2))


def test_single_candidate_in_total_gives_no_positive():
    anchors = [torch.tensor([[0.0, 0, 10, 10]])]
    _matched, labels = ATSSMatcher(topk=9)(anchors, torch.tensor([[0.0, 0, 10, 10]]))
    assert labels.tolist() == [0]  # unbiased std of one value is NaN, as in the reference code


def test_distance_ties_take_lower_anchor_index():
    # GT centre (8, 8) is equidistant from four anchor centres; topk=1 must pick index 0 of them.
    level = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16]]).double()
    far = torch.tensor([[100.0, 100, 116, 116]]).double()
    gt = torch.tensor([[1.0, 1, 15, 15]]).double()
    matcher = ATSSMatcher(topk=1)
    nearest = matcher._candidates([level, far], gt)
    assert nearest[:, 0].tolist() == [0, 4]


# --------------------------------------------------------------------------- reference comparison


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("topk, scales", [(9, [8]), (9, [6, 8]), (18, [6, 8])])
def test_matches_bruteforce_reference_on_grid_anchors(seed, topk, scales):
    # topk=9 with 2 scales cuts through anchor pairs sharing a centre: exercises tie-breaking.
    gen = torch.Generator().manual_seed(seed)
    image_hw = (80, 112)
    anchors = grid_anchors(image_hw, [8, 16, 32, 64], scales)  # last level has < topk anchors
    gts = random_gt(gen, 12, image_hw, num_degenerate=2)
    got = ATSSMatcher(topk=topk)(anchors, gts)
    expected = reference_atss(anchors, gts, topk=topk)
    assert expected[1].sum() > 0
    assert_same_assignment(got, expected)


@pytest.mark.parametrize("seed", range(3))
def test_matches_bruteforce_reference_on_random_anchors(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    levels = []
    for n, size in ((60, 12.0), (25, 30.0), (7, 60.0)):
        xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 100
        wh = (torch.rand(n, 2, generator=gen, dtype=torch.float64) + 0.5) * size
        levels.append(torch.cat([xy - wh / 2, xy + wh / 2], dim=1))
    gts = random_gt(gen, 15, (100, 100))
    got = ATSSMatcher(topk=9)([Boxes(a) for a in levels], Boxes(gts))  # Boxes inputs as well
    assert_same_assignment(got, reference_atss(levels, gts, topk=9))


def test_gt_chunking_changes_nothing_and_bounds_the_distance_block():
    gen = torch.Generator().manual_seed(7)
    anchors = grid_anchors((96, 96), [8, 16, 32], [6, 8])
    gts = random_gt(gen, 40, (96, 96))
    reference = ATSSMatcher(topk=18)(anchors, gts)

    block_sizes = []

    class Recording(ATSSMatcher):
        @staticmethod
        def _smallest_k_stable(dist, k):
            block_sizes.append(dist.numel())
            return ATSSMatcher._smallest_k_stable(dist, k)

    chunked = Recording(topk=18, max_block_elements=1000)(anchors, gts)
    assert torch.equal(chunked[1], reference[1])
    assert torch.equal(chunked[0][reference[1] == 1], reference[0][reference[1] == 1])
    largest_level = max(len(a) for a in anchors)  # 288 anchors: 3 GTs per block
    assert max(block_sizes) <= max(1000, largest_level)
    assert len(block_sizes) > len(anchors)  # really chunked


def test_float32_inputs_on_integer_boxes_match_reference():
    gen = torch.Generator().manual_seed(3)
    anchors = grid_anchors((64, 96), [8, 16, 32], [6, 8])
    gts = random_gt(gen, 10, (64, 96)).round()
    got = ATSSMatcher(topk=18)([a.float() for a in anchors], gts.float())
    assert_same_assignment(got, reference_atss(anchors, gts, topk=18))


def test_anchors_sharing_a_location_are_ranked_once():
    two = grid_anchors((64, 96), [8, 16], [6, 8])
    centers = [(a[:, :2] + a[:, 2:]) / 2 for a in two]
    assert [ATSSMatcher._anchors_per_location(c) for c in centers] == [2, 2]
    one = grid_anchors((64, 96), [8], [8])[0]
    assert ATSSMatcher._anchors_per_location((one[:, :2] + one[:, 2:]) / 2) == 1
    uneven = torch.tensor([[0.0, 0], [0, 0], [1, 1], [2, 2]])
    assert ATSSMatcher._anchors_per_location(uneven) == 1
    # The per-location ranking (topk 18 = 9 locations x 2) equals ranking every anchor.
    gen = torch.Generator().manual_seed(11)
    gts = random_gt(gen, 20, (64, 96))

    class PerAnchor(ATSSMatcher):
        @staticmethod
        def _anchors_per_location(centers):
            return 1

    fast, slow = ATSSMatcher(topk=18)(two, gts), PerAnchor(topk=18)(two, gts)
    assert torch.equal(fast[1], slow[1]) and torch.equal(fast[0], slow[0])
