"""ATSS meta-architecture and head: layout, init, targets, losses, inference, training."""

import itertools
import math

import pytest
import torch
from _atss_references import (
    CHANNELS,
    STRIDES,
    TinyBackbone,
    make_atss,
    make_batch,
    train_on_fixed_batch,
)
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage
from fvcore.nn import giou_loss, sigmoid_focal_loss
from torch import nn
from torch.nn import functional as F

from efl_d2.losses import EqualizedFocalLoss
from efl_d2.modeling import ATSS, ATSSHead


class FocalLoss(nn.Module):
    """Local stand-in with the cls_loss call signature, on top of fvcore's focal loss."""

    def __init__(self, num_classes, alpha=0.25, gamma=2.0):
        super().__init__()
        self.num_classes, self.alpha, self.gamma = num_classes, alpha, gamma

    def forward(self, logits, gt_classes, normalizer):
        valid = gt_classes >= 0
        target = F.one_hot(gt_classes[valid], self.num_classes + 1)[:, :-1].to(logits.dtype)
        loss = sigmoid_focal_loss(logits[valid], target, self.alpha, self.gamma, "sum")
        return loss / normalizer


class Recording(nn.Module):
    """Records what the model hands to the classification loss, then delegates."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, logits, gt_classes, normalizer):
        self.calls.append((logits, gt_classes, normalizer))
        return self.inner(logits, gt_classes, normalizer)


# --------------------------------------------------------------------------- head


def test_head_output_shapes_and_tower_layers():
    head = ATSSHead(
        input_shape=[ShapeSpec(channels=CHANNELS)] * 3, num_classes=7, num_anchors=2,
        conv_dims=[CHANNELS] * 4,
    )  # fmt: skip
    sizes = [(12, 16), (6, 8), (3, 4)]
    feats = [torch.randn(2, CHANNELS, h, w) for h, w in sizes]
    logits, deltas, quality = head(feats)
    for (h, w), x, d, q in zip(sizes, logits, deltas, quality):
        assert x.shape == (2, 2 * 7, h, w)
        assert d.shape == (2, 2 * 4, h, w)
        assert q.shape == (2, 2, h, w)
    for tower in (head.cls_subnet, head.bbox_subnet):
        convs = [m for m in tower if isinstance(m, nn.Conv2d)]
        norms = [m for m in tower if isinstance(m, nn.GroupNorm)]
        assert len(convs) == len(norms) == 4
        assert all(c.bias is None for c in convs)  # GN follows: no conv bias
        assert all(n.num_groups == 32 for n in norms)
        assert [type(m) for m in tower[:3]] == [nn.Conv2d, nn.GroupNorm, nn.ReLU]
    plain = ATSSHead(input_shape=[ShapeSpec(channels=8)], num_classes=2, num_anchors=1,
                     conv_dims=[8], norm="")  # fmt: skip
    assert plain.cls_subnet[0].bias is not None and len(plain.cls_subnet) == 2


def test_quality_branch_reads_the_box_tower():
    head = ATSSHead(input_shape=[ShapeSpec(channels=CHANNELS)], num_classes=3, num_anchors=2,
                    conv_dims=[CHANNELS])  # fmt: skip
    feats = [torch.randn(1, CHANNELS, 5, 5)]
    base = head(feats)[2][0]
    with torch.no_grad():
        head.cls_subnet[0].weight.mul_(3.0)
    assert torch.equal(head(feats)[2][0], base)
    with torch.no_grad():
        head.bbox_subnet[0].weight.mul_(3.0)
    assert not torch.allclose(head(feats)[2][0], base)


@pytest.mark.parametrize("prior", [0.001, 0.01])
def test_head_init_prior_and_normal_weights(prior):
    torch.manual_seed(0)
    head = ATSSHead(input_shape=[ShapeSpec(channels=64)], num_classes=50, num_anchors=2,
                    conv_dims=[64] * 4, prior_prob=prior)  # fmt: skip
    torch.testing.assert_close(torch.sigmoid(head.cls_score.bias), torch.full((100,), prior))
    assert head.bbox_pred.bias.abs().max() == 0 and head.quality_pred.bias.abs().max() == 0
    for conv in (head.cls_score, head.cls_subnet[0], head.bbox_subnet[9]):
        assert abs(conv.weight.std().item() - 0.01) < 0.001
        assert abs(conv.weight.mean().item()) < 0.001


# --------------------------------------------------------------------------- anchors and layout


def test_anchor_layout_scale6_then_8_row_major_centres_at_half_stride():
    model = make_atss()
    feats = [torch.zeros(1, CHANNELS, 2, 3), torch.zeros(1, CHANNELS, 1, 2)] + [
        torch.zeros(1, CHANNELS, 1, 1)
    ] * 3
    anchors = model.anchor_generator(feats)
    p3 = anchors[0].tensor
    assert p3.shape == (2 * 3 * 2, 4)
    # Location (y=0, x=0): side 48 then 64 around (4, 4); the official [-20,-20,27,27] (+1
    # convention, inclusive) is detectron2's [-20,-20,28,28].
    torch.testing.assert_close(p3[0], torch.tensor([-20.0, -20, 28, 28]))
    torch.testing.assert_close(p3[1], torch.tensor([-28.0, -28, 36, 36]))
    # Next anchors: location (y=0, x=1), then x=2, then the next row.
    torch.testing.assert_close(p3[2], torch.tensor([-12.0, -20, 36, 28]))
    torch.testing.assert_close(p3[6], torch.tensor([-20.0, -12, 28, 36]))
    torch.testing.assert_close(anchors[1].tensor[1], torch.tensor([-56.0, -56, 72, 72]))
    torch.testing.assert_close(anchors[4].tensor[0], torch.tensor([-320.0, -320, 448, 448]))


def test_cls_logits_reach_the_loss_anchor_major_in_anchor_order():
    """Row r of the loss input is anchor r of Boxes.cat(anchors); column c is class c."""
    num_classes, num_anchors = 3, 2
    recorder = Recording(FocalLoss(num_classes))
    model = make_atss(num_classes=num_classes, cls_loss=recorder)
    batch = make_batch()
    sizes = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]

    def encoded_head(features):
        # Channel a*C + c at (y, x) of level l holds a unique code of (l, y, x, a, c).
        logits = []
        for level, f in enumerate(features):
            n, _, h, w = f.shape
            a, c, y, x = torch.meshgrid(
                torch.arange(num_anchors), torch.arange(num_classes), torch.arange(h),
                torch.arange(w), indexing="ij",
            )  # fmt: skip
            code = (((level * 100 + y) * 100 + x) * 10 + a) * 10 + c
            logits.append(code.reshape(1, -1, h, w).expand(n, -1, -1, -1).float())
        zeros = [torch.zeros(f.shape[0], k, *f.shape[2:]) for f in features for k in (8,)]
        return logits, zeros, [z[:, :2] for z in zeros]

    model.head.forward = encoded_head
    with EventStorage():
        model(batch)
    logits, labels, _ = recorder.calls[0]
    anchors = model.anchor_generator([torch.zeros(1, 1, h, w) for h, w in sizes])
    assert logits.shape == (2 * sum(len(a) for a in anchors), num_classes)
    row = 0
    for _image in range(2):
        for level, (h, w) in enumerate(sizes):
            for y in range(h):
                for x in range(w):
                    for a in range(num_anchors):
                        expect = [(((level * 100 + y) * 100 + x) * 10 + a) * 10 + c
                                  for c in range(num_classes)]  # fmt: skip
                        assert logits[row].tolist() == expect
                        row += 1
    # And the labels of those rows are the matcher's labels for the same anchors.
    inst = batch[0]["instances"]
    matched, fg = model.anchor_matcher(anchors, inst.gt_boxes)
    expected = torch.where(fg == 1, inst.gt_classes[matched], num_classes)
    assert torch.equal(labels[: len(expected)], expected)
    assert (labels[len(expected) :] == num_classes).all()  # second image: no annotations


def test_positives_of_a_class_land_in_that_class_efl_statistics():
    """EFL's pos_grad[k] is the |gradient| at channel a*C+k of the raw head output at exactly
    the anchors labelled k; classes without positives get none."""
    num_classes = 5
    efl = EqualizedFocalLoss(num_classes, gamma_b=2.0, scale=8.0)
    model = make_atss(num_classes=num_classes, cls_loss=efl)
    batch = make_batch()
    raw = {}

    def keep_logits(module, inputs, outputs):
        raw["logits"] = outputs[0]
        for t in outputs[0]:
            t.retain_grad()

    model.head.register_forward_hook(keep_logits)
    with EventStorage():
        losses = model(batch)
    losses["loss_cls"].backward()

    anchors = model.anchor_generator([t for t in raw["logits"]])
    per_level = [len(a) for a in anchors]
    pos_sum = torch.zeros(num_classes, dtype=torch.float64)
    neg_sum = torch.zeros(num_classes, dtype=torch.float64)
    for img, item in enumerate(batch):
        inst = item["instances"]
        matched, fg = model.anchor_matcher(anchors, inst.gt_boxes)
        labels = torch.where(fg == 1, inst.gt_classes[matched] if len(inst) else fg, num_classes)
        start = 0
        for level, grad in enumerate(t.grad[img] for t in raw["logits"]):
            _, h, w = grad.shape
            g = grad.reshape(2, num_classes, h, w).permute(2, 3, 0, 1).reshape(-1, num_classes)
            lab = labels[start : start + per_level[level]]
            onehot = F.one_hot(lab, num_classes + 1)[:, :num_classes].double()
            pos_sum += (g.abs().double() * onehot).sum(0)
            neg_sum += (g.abs().double() * (1 - onehot)).sum(0)
            start += per_level[level]
    assert efl.pos_grad[1] > 0 and efl.pos_grad[3] > 0  # the batch's classes
    assert efl.pos_grad[[0, 2, 4]].abs().sum() == 0
    torch.testing.assert_close(efl.pos_grad.double(), pos_sum, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(efl.neg_grad.double(), neg_sum, rtol=1e-4, atol=1e-9)


# --------------------------------------------------------------------------- losses and targets


def test_quality_targets_closed_forms():
    anchors = torch.tensor([[0.0, 2, 8, 10], [10, 10, 30, 20]])  # centres (4, 6), (20, 15)
    gts = torch.tensor([[0.0, 0, 10, 8], [12, 11, 40, 17]])
    preds = torch.tensor([[0.0, 0, 10, 4], [12, 11, 26, 17]])
    ctr = make_atss(quality="centerness").quality_targets(anchors, preds, gts)
    # l, t, r, b = (4, 6, 6, 2) and (8, 4, 20, 2)
    expected = [math.sqrt(4 / 6 * 2 / 6), math.sqrt(8 / 20 * 2 / 4)]
    torch.testing.assert_close(ctr, torch.tensor(expected))
    iou = make_atss(quality="iou").quality_targets(anchors, preds, gts)
    torch.testing.assert_close(iou, torch.tensor([0.5, 0.5]))  # target from the prediction


def _hand_made_loss_inputs(model, num_pos_boxes):
    """Two levels, one image, given positives; returns the args of ATSS.losses."""
    anchors = [Boxes(torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32]])),
               Boxes(torch.tensor([[0.0, 0, 32, 32]]))]  # fmt: skip
    C = model.num_classes
    labels = torch.tensor([C, C, C, C])
    boxes = torch.zeros(4, 4)
    for i, (cls, box) in zip([0, 1, 3], num_pos_boxes):  # anchors 0, 1 (level 0) and 3 (level 1)
        labels[i], boxes[i] = cls, torch.tensor(box)
    torch.manual_seed(1)
    logits = [torch.randn(1, 3, C, requires_grad=True), torch.randn(1, 1, C, requires_grad=True)]
    deltas = [torch.randn(1, 3, 4) * 0.1, torch.randn(1, 1, 4) * 0.1]
    quality = [torch.randn(1, 3, 1), torch.randn(1, 1, 1)]
    return anchors, logits, [labels], deltas, [boxes], quality


@pytest.mark.parametrize("quality", ["iou", "centerness"])
def test_losses_follow_the_official_normalisers(quality):
    recorder = Recording(FocalLoss(4))
    model = make_atss(num_classes=4, cls_loss=recorder, quality=quality, box_loss_weight=2.0)
    positives = [(1, [1.0, 2, 14, 15]), (2, [15.0, 1, 30, 12]), (1, [0.0, 0, 30, 30])]
    args = _hand_made_loss_inputs(model, positives)
    anchors, logits, _labels, deltas, gt_boxes, quality_logits = args
    with EventStorage():
        losses = model.losses(*args)

    _, passed_labels, normalizer = recorder.calls[0]
    assert normalizer == 3.0  # #positives (single process)
    assert passed_labels.tolist() == [1, 2, 4, 1]

    anchor_t = Boxes.cat(anchors).tensor[[0, 1, 3]]
    pred = model.box2box_transform.apply_deltas(torch.cat(deltas, 1)[0, [0, 1, 3]], anchor_t)
    gt = gt_boxes[0][[0, 1, 3]]
    q = model.quality_targets(anchor_t, pred, gt)
    if quality == "iou":
        torch.testing.assert_close(q, torch.diag(pairwise_iou(Boxes(pred), Boxes(gt))))
    box = 2.0 * (giou_loss(pred, gt) * q).sum() / max(q.sum().item(), 1.0)
    qlog = torch.cat(quality_logits, 1)[0, [0, 1, 3], 0]
    bce = F.binary_cross_entropy_with_logits(qlog, q, reduction="sum") / 3.0
    torch.testing.assert_close(losses["loss_box_reg"], box)
    torch.testing.assert_close(losses[f"loss_{quality}"], bce)
    torch.testing.assert_close(
        losses["loss_cls"], FocalLoss(4)(torch.cat(logits, 1)[0], passed_labels, 3.0)
    )


def test_no_positive_gives_zero_box_and_quality_losses_with_gradient():
    model = make_atss(num_classes=4)
    args = _hand_made_loss_inputs(model, [])
    with EventStorage():
        losses = model.losses(*args)
    assert losses["loss_box_reg"] == 0 and losses["loss_iou"] == 0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0
    losses["loss_cls"].backward()  # normaliser max(0, 1) = 1
    expected = FocalLoss(4)(torch.cat([x.detach() for x in args[1]], 1)[0], args[2][0], 1.0)
    torch.testing.assert_close(losses["loss_cls"].detach(), expected)


def test_ema_normalizer_flag():
    recorder = Recording(FocalLoss(4))
    model = make_atss(num_classes=4, cls_loss=recorder, ema_loss_normalizer=True)
    args = _hand_made_loss_inputs(model, [(1, [1.0, 2, 14, 15]), (2, [15.0, 1, 30, 12])])
    with EventStorage():
        model.losses(*args)
        model.losses(*args)
    assert recorder.calls[0][2] == pytest.approx(0.9 * 100 + 0.1 * 2)
    assert recorder.calls[1][2] == pytest.approx(0.9 * (0.9 * 100 + 0.1 * 2) + 0.1 * 2)


def test_default_cls_loss_is_sigmoid_focal_loss():
    args = _hand_made_loss_inputs(make_atss(num_classes=4), [(1, [1.0, 2, 14, 15])])
    with EventStorage():
        default = make_atss(num_classes=4).losses(*args)["loss_cls"]
        plugged = make_atss(num_classes=4, cls_loss=FocalLoss(4)).losses(*args)["loss_cls"]
    torch.testing.assert_close(default, plugged)


# --------------------------------------------------------------------------- inference


def _decode_model(**kwargs):
    return make_atss(num_classes=2, **kwargs)


def test_inference_class_aware_nms_threshold_and_sorting():
    model = _decode_model(test_score_thresh=0.0, test_nms_thresh=0.5)
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    anchors = [Boxes(torch.cat([boxes, boxes + 20]))]  # 6 anchors: the level keeps <= 6 pairs
    # IoU(anchor 0, anchor 1) = 0.818 > 0.5; the last three anchors score 0: not > threshold 0.
    scores = [torch.tensor([[0.9, 0.8], [0.7, 0.1], [0.05, 0.0]] + [[0.0, 0.0]] * 3)]
    out = model.inference_single_image(anchors, scores, [torch.zeros(6, 4)], (100, 100))
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.05])
    assert out.pred_classes.tolist() == [0, 1, 0]
    # Same box, different classes: both kept (class-aware NMS).
    torch.testing.assert_close(out.pred_boxes.tensor[0], out.pred_boxes.tensor[1])

    model.max_detections_per_image = 2
    out = model.inference_single_image(anchors, scores, [torch.zeros(6, 4)], (100, 100))
    assert out.scores.tolist() == pytest.approx([0.9, 0.8])


def test_inference_per_level_cap_is_min_topk_and_anchor_count_and_boxes_are_clipped():
    model = _decode_model(test_topk_candidates=6000)
    far_apart = torch.tensor([[0.0, 0, 10, 10], [30, 0, 40, 10], [60, 0, 75, 10]])
    anchors = [Boxes(far_apart), Boxes(far_apart + 100)]
    scores = [torch.tensor([[0.9, 0.8], [0.7, 0.6], [0.5, 0.4]]),
              torch.tensor([[0.35, 0.3], [0.25, 0.2], [0.15, 0.1]])]  # fmt: skip
    out = model.inference_single_image(anchors, scores, [torch.zeros(3, 4)] * 2, (100, 70))
    # Each level keeps its top 3 (= #anchors) of its 6 (anchor, class) pairs.
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.35, 0.3, 0.25])
    assert out.pred_boxes.tensor[:, 2].max() <= 70 and out.pred_boxes.tensor[:, 3].max() <= 100
    model.test_topk_candidates = 2
    out = model.inference_single_image(anchors, scores, [torch.zeros(3, 4)] * 2, (100, 70))
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.35, 0.3])


def test_per_level_decoding_equals_detectron2s():
    from detectron2.modeling.meta_arch.dense_detector import DenseDetector

    model = _decode_model()
    gen = torch.Generator().manual_seed(0)
    anchors = Boxes(torch.rand(50, 4, generator=gen).sort(dim=1).values * 100)
    scores = torch.rand(50, 2, generator=gen)
    deltas = torch.randn(50, 4, generator=gen) * 0.1
    for thresh, topk in ((0.0, 40), (0.7, 40), (0.7, 5), (0.0, 1000)):
        args = (anchors, scores, deltas, thresh, topk, (100, 100))
        got = model._decode_per_level_predictions(*args)
        expected = DenseDetector._decode_per_level_predictions(model, *args)
        for field in ("scores", "pred_classes"):
            assert torch.equal(got.get(field), expected.get(field))
        assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)


def test_inference_score_is_cls_times_quality():
    model = _decode_model(max_detections_per_image=1000)
    with torch.no_grad():
        head = model.head
        for conv in (head.cls_score, head.bbox_pred, head.quality_pred):
            conv.weight.zero_()
        # Anchor 0 (scale 6) prefers class 0, anchor 1 (scale 8) class 1, so both classes survive
        # the per-level cap of #anchors (anchor, class) pairs.
        head.cls_score.bias.copy_(torch.tensor([0.5, -3.0, -3.0, -1.0]))
        head.quality_pred.bias.fill_(2.0)
    model.eval()
    image = torch.rand(3, 64, 64) * 255
    with torch.no_grad():
        inst = model([{"image": image}])[0]["instances"]
    expected = {0: torch.sigmoid(torch.tensor(0.5)) * torch.sigmoid(torch.tensor(2.0)),
                1: torch.sigmoid(torch.tensor(-1.0)) * torch.sigmoid(torch.tensor(2.0))}  # fmt: skip
    assert len(inst) > 0
    for c in (0, 1):
        got = inst.scores[inst.pred_classes == c]
        assert len(got) > 0
        torch.testing.assert_close(got, expected[c].expand_as(got))


def test_inference_end_to_end_caps_sorts_and_rescales():
    model = make_atss(num_classes=6, prior_prob=0.1, max_detections_per_image=300)
    model.eval()
    image = torch.rand(3, 96, 128) * 255
    with torch.no_grad():
        native = model([{"image": image}])[0]["instances"]
        scaled = model([{"image": image, "height": 192, "width": 256}])[0]["instances"]
    assert 0 < len(native) <= 300
    assert (native.scores[:-1] >= native.scores[1:]).all()
    assert native.image_size == (96, 128) and scaled.image_size == (192, 256)
    torch.testing.assert_close(scaled.pred_boxes.tensor, native.pred_boxes.tensor * 2)
    boxes = scaled.pred_boxes.tensor
    assert boxes.min() >= 0 and (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 192).all()


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("quality", ["iou", "centerness"])
def test_training_steps_reduce_the_loss_on_a_fixed_batch(quality):
    efl = EqualizedFocalLoss(4)
    model = make_atss(num_classes=4, cls_loss=efl, quality=quality)
    totals = train_on_fixed_batch(model, {"loss_cls", "loss_box_reg", f"loss_{quality}"})
    # Single steps are noisy (SGD on one batch); compare the ends of the run.
    assert sum(totals[-3:]) < 0.8 * sum(totals[:3]), totals
    assert efl.pos_grad[[1, 3]].min() > 0 and efl.pos_grad[[0, 2]].max() == 0


def test_atss_efl_training_on_mini_lvis_reduces_the_loss(mini_lvis_root):
    num_classes = len(MetadataCatalog.get("mini_lvis_v1_train").thing_classes)
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    records = DatasetCatalog.get("mini_lvis_v1_train")[:8]
    data = [mapper(r) for r in records]
    batches = [data[i : i + 2] for i in range(0, len(data), 2)]

    efl = EqualizedFocalLoss(num_classes)
    model = make_atss(num_classes=num_classes, cls_loss=efl)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    with EventStorage():
        for batch in itertools.islice(itertools.cycle(batches), 3 * len(batches)):
            losses = model(batch)
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            totals.append(total.item())
    first, last = totals[: len(batches)], totals[-len(batches) :]
    assert sum(last) < 0.8 * sum(first), totals

    # Positive gradient statistics only for classes annotated in these images.
    seen = {a["category_id"] for r in records for a in r["annotations"]}
    assert efl.pos_grad[sorted(seen)].max() > 0
    assert efl.pos_grad[[c for c in range(num_classes) if c not in seen]].abs().sum() == 0

    model.eval()
    with torch.no_grad():
        out = model([{"image": data[0]["image"], "height": 192, "width": 256}])[0]["instances"]
    assert 0 < len(out) <= model.max_detections_per_image
    assert (out.scores[:-1] >= out.scores[1:]).all()
    assert out.pred_boxes.tensor[:, 2].max() <= 256 and out.pred_boxes.tensor[:, 3].max() <= 192


def test_batch_without_any_annotation_trains():
    model = make_atss(num_classes=3)
    batch = make_batch()[1:] * 2
    with EventStorage():
        losses = model(batch)
    assert losses["loss_box_reg"] == 0 and losses["loss_iou"] == 0
    sum(losses.values()).backward()
    assert model.head.cls_score.bias.grad.abs().sum() > 0


def test_degenerate_gt_box_is_ignored_in_training():
    model = make_atss(num_classes=3)
    batch = make_batch()
    inst = batch[0]["instances"]
    with_degenerate = Instances(inst.image_size)
    with_degenerate.gt_boxes = Boxes(
        torch.cat([torch.tensor([[30.0, 30, 30, 60]]), inst.gt_boxes.tensor])
    )
    with_degenerate.gt_classes = torch.cat([torch.tensor([2]), inst.gt_classes])
    with EventStorage():
        ref = model(batch)
        batch[0]["instances"] = with_degenerate
        got = model(batch)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k])


def test_mismatched_anchor_count_is_a_clear_error():
    with pytest.raises(ValueError, match="anchors per location"):
        ATSS(
            backbone=TinyBackbone(),
            head=ATSSHead(
                input_shape=[ShapeSpec(channels=CHANNELS)] * 5,
                num_classes=2,
                num_anchors=2,
                conv_dims=[CHANNELS],
            ),
            anchor_generator=DefaultAnchorGenerator(
                sizes=[[8 * s] for s in STRIDES], aspect_ratios=[1.0], strides=STRIDES
            ),
            num_classes=2,
            pixel_mean=[0, 0, 0],
            pixel_std=[1, 1, 1],
        )
