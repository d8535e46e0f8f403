"""Model configs (LazyConfig files, yacs build_model) and the loss-pluggable RetinaNet / FCOS."""

import copy
import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import FCOS, RetinaNet, build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from fvcore.nn import sigmoid_focal_loss
from torch import nn
from torch.nn import functional as F

from efl_d2.losses import EqualizedFocalLoss, SigmoidFocalLoss
from efl_d2.model_zoo import small_resnet_fpn
from efl_d2.modeling import (
    ATSS,
    PAA,
    ATSSMatcher,
    PluggableFCOS,
    PluggableRetinaNet,
    add_atss_config,
)

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "common", "models")
HW = (160, 192)  # P7 is 2x2: GroupNorm(32) on 32 channels needs > 1 value per group


class FocalLoss(nn.Module):
    """Local sigmoid focal loss with the cls_loss call signature (fvcore underneath)."""

    def __init__(self, num_classes, alpha=0.25, gamma=2.0):
        super().__init__()
        self.num_classes, self.alpha, self.gamma = num_classes, alpha, gamma
        self.calls = []

    def forward(self, logits, gt_classes, normalizer):
        self.calls.append((logits.shape, gt_classes.clone(), normalizer))
        valid = gt_classes >= 0
        target = F.one_hot(gt_classes[valid], self.num_classes + 1)[:, :-1].to(logits.dtype)
        return sigmoid_focal_loss(logits[valid], target, self.alpha, self.gamma, "sum") / normalizer


def load_model_cfg(name, num_classes=3):
    """configs/common/models/<name>.py with a ResNet-18, 32-channel FPN/head, few classes."""
    model = LazyConfig.load(os.path.join(CONFIG_DIR, f"{name}.py")).model
    model.num_classes = num_classes
    return small_resnet_fpn(model, depth=18, channels=32, head_convs=2)


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)

    def instances(boxes, classes):
        inst = Instances(HW)
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
        return inst

    return [
        {"image": torch.rand(3, *HW, generator=gen) * 255,
         "instances": instances([[10, 12, 90, 100], [100, 40, 180, 90], [30, 30, 60, 55]], [0, 2, 2])},
        {"image": torch.rand(3, *HW, generator=gen) * 255, "instances": instances([], [])},
    ]  # fmt: skip


# --------------------------------------------------------------------------- ATSS configs


def test_atss_model_config_is_original_atss_and_dataset_neutral():
    model = instantiate(LazyConfig.load(os.path.join(CONFIG_DIR, "atss.py")).model)
    assert isinstance(model, ATSS)
    assert isinstance(model.cls_loss, SigmoidFocalLoss)
    assert (model.cls_loss.gamma, model.cls_loss.alpha) == (2.0, 0.25)
    # detectron2's model defaults where a dataset decides: 80 classes, prior 0.01, 100 detections
    assert model.cls_loss.num_classes == 80 and model.num_classes == 80
    assert torch.sigmoid(model.head.cls_score.bias[0]).item() == pytest.approx(0.01)
    assert model.max_detections_per_image == 100
    assert isinstance(model.anchor_matcher, ATSSMatcher) and model.anchor_matcher.topk == 9
    sides = [b[:, 2] - b[:, 0] for b in model.anchor_generator.cell_anchors]
    assert [s.tolist() for s in sides] == [[8.0 * st] for st in (8, 16, 32, 64, 128)]
    assert model.anchor_generator.offset == 0.5 and model.quality == "centerness"
    assert (model.test_topk_candidates, model.test_nms_thresh) == (6000, 0.5)
    assert model.backbone.bottom_up.output_shape()["res5"].channels == 2048  # R50
    assert model.backbone.top_block.p6.in_channels == 256  # P6 from P5


def test_improved_atss_with_the_lvis_protocol_is_the_paper_baseline():
    """Baseline† = models/atss_improved.py + lvis_one_stage.py (+ training settings)."""
    path = os.path.join(CONFIG_DIR, "..", "..", "LVIS", "atss_improved_R50_2x_focal.py")
    model = instantiate(LazyConfig.load(path).model)
    assert isinstance(model.cls_loss, SigmoidFocalLoss)
    assert model.cls_loss.num_classes == 1203 and model.num_classes == 1203
    assert model.head.cls_score.out_channels == 2 * 1203
    assert torch.sigmoid(model.head.cls_score.bias[0]).item() == pytest.approx(0.001)
    assert isinstance(model.anchor_matcher, ATSSMatcher) and model.anchor_matcher.topk == 18
    assert model.anchor_generator.num_cell_anchors == [2] * 5
    sides = [b[:, 2] - b[:, 0] for b in model.anchor_generator.cell_anchors]
    assert [s.tolist() for s in sides] == [[6.0 * st, 8.0 * st] for st in (8, 16, 32, 64, 128)]
    assert model.quality == "iou"
    assert (model.test_score_thresh, model.test_topk_candidates) == (0.0, 6000)
    assert (model.test_nms_thresh, model.max_detections_per_image) == (0.5, 300)


def test_atss_lazy_config_with_tiny_overrides_trains_and_infers():
    cfg = load_model_cfg("atss_improved")
    cfg.cls_loss = L(EqualizedFocalLoss)(num_classes="${..num_classes}")
    model = instantiate(cfg)
    assert model.cls_loss.num_classes == 3  # interpolated from model.num_classes
    with EventStorage():
        losses = model(batch())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_iou"}
    sum(losses.values()).backward()
    assert model.cls_loss.pos_grad[[0, 2]].min() > 0 and model.cls_loss.pos_grad[1] == 0
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch()[0]["image"], "height": 320, "width": 384}])
    inst = out[0]["instances"]
    assert 0 < len(inst) <= 300 and inst.image_size == (320, 384)


def _yacs_cfg():
    cfg = get_cfg()
    add_atss_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "ATSS"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ATSS.NUM_CLASSES = 3
    cfg.MODEL.ATSS.NUM_CONVS = 2
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.RETINANET.NUM_CONVS = 2
    return cfg


def test_atss_yacs_build_model():
    cfg = _yacs_cfg()
    cfg.MODEL.CLS_LOSS.NAME = "EqualizedFocalLoss"
    cfg.MODEL.CLS_LOSS.SCALE = 4.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 300
    model = build_model(cfg)
    assert isinstance(model, ATSS)
    assert isinstance(model.cls_loss, EqualizedFocalLoss) and model.cls_loss.scale == 4.0
    assert model.anchor_matcher.topk == 18 and model.anchor_generator.num_cell_anchors == [2] * 5
    assert next(iter(model.anchor_generator.cell_anchors))[0].tolist() == [-24.0, -24.0, 24.0, 24.0]
    assert model.head.cls_score.out_channels == 6 and model.max_detections_per_image == 300
    assert torch.sigmoid(model.head.cls_score.bias[0]).item() == pytest.approx(0.001)
    with EventStorage():
        losses = model(batch())
    assert all(torch.isfinite(v) for v in losses.values())

    cfg = _yacs_cfg()
    cfg.MODEL.ATSS.ANCHOR_SCALES = [8]
    cfg.MODEL.ATSS.TOPK = 9
    cfg.MODEL.ATSS.QUALITY = "centerness"
    model = build_model(cfg)
    assert model.cls_loss is None and model.quality == "centerness"
    assert model.anchor_generator.num_cell_anchors == [1] * 5 and model.head.num_anchors == 1


def test_paa_yacs_build_model():
    cfg = _yacs_cfg()
    cfg.MODEL.META_ARCHITECTURE = "PAA"
    cfg.MODEL.ATSS.ANCHOR_SCALES = [8]
    cfg.MODEL.PAA.TOPK = 5
    cfg.MODEL.PAA.IOU_THRESHOLD = 0.2
    model = build_model(cfg)
    assert isinstance(model, PAA) and model.topk == 5 and model.score_voting
    assert model.initial_matcher.thresholds[1:-1] == [0.2] and model.anchor_matcher is None
    with EventStorage():
        losses = model(batch())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_iou"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_unknown_cls_loss_name_is_a_clear_error():
    cfg = _yacs_cfg()
    cfg.MODEL.CLS_LOSS.NAME = "NoSuchLoss"
    with pytest.raises(KeyError, match="EqualizedFocalLoss"):
        build_model(cfg)


# --------------------------------------------------------------------------- pluggable RetinaNet / FCOS


def _pair(name, parent_target, num_classes=3):
    """(parent detectron2 model, pluggable model with a focal cls_loss), identical weights."""
    cfg = load_model_cfg(name, num_classes)
    cfg.cls_loss = None
    torch.manual_seed(0)
    plugged = instantiate(cfg)
    cfg.pop("cls_loss")
    cfg.pop("test_topk_per_class")  # the pluggable detectors' AP-fixed option
    cfg._target_ = parent_target
    parent = instantiate(cfg)
    parent.load_state_dict(plugged.state_dict())
    plugged.cls_loss = FocalLoss(num_classes, parent.focal_loss_alpha, parent.focal_loss_gamma)
    return parent, plugged


@pytest.mark.parametrize(
    "name, parent_target, pluggable",
    [
        ("retinanet_pluggable", RetinaNet, PluggableRetinaNet),
        ("fcos_pluggable", FCOS, PluggableFCOS),
    ],
)
def test_pluggable_with_focal_cls_loss_equals_detectron2_original(name, parent_target, pluggable):
    parent, plugged = _pair(name, parent_target)
    assert type(plugged) is pluggable and type(parent) is parent_target
    inputs = batch()
    with EventStorage():
        expected = parent(inputs)
        got = plugged(inputs)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)

    (shape, labels, normalizer), = plugged.cls_loss.calls  # fmt: skip
    num_anchors = len(labels) // 2  # rows: image 0's anchors, then image 1's
    assert shape == (2 * num_anchors, 3) and labels.shape == (2 * num_anchors,)
    num_pos = ((labels >= 0) & (labels < 3)).sum().item()
    assert num_pos > 0 and (labels[num_anchors:] == 3).all()  # image 2: background only
    assert normalizer == pytest.approx(plugged.loss_normalizer)  # detectron2's EMA, kept
    if parent_target is RetinaNet:
        assert (labels == -1).any()  # RetinaNet's ignore band reaches the loss as -1


@pytest.mark.parametrize("name", ["retinanet_pluggable", "fcos_pluggable"])
def test_pluggable_configs_train_with_efl(name):
    cfg = load_model_cfg(name)
    assert cfg.cls_loss._target_ is SigmoidFocalLoss  # the detectors' own loss by default
    cfg.cls_loss = L(EqualizedFocalLoss)(num_classes="${..num_classes}")
    model = instantiate(cfg)
    assert isinstance(model.cls_loss, EqualizedFocalLoss) and model.cls_loss.num_classes == 3
    with EventStorage():
        losses = model(batch())
    sum(losses.values()).backward()
    stats = model.cls_loss.pos_grad
    assert stats[[0, 2]].min() > 0 and stats[1] == 0


def test_pluggable_without_cls_loss_is_the_parent():
    parent, plugged = _pair("retinanet_pluggable", RetinaNet)
    plugged.cls_loss = None
    with EventStorage():
        expected, got = parent(batch()), plugged(batch())
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_pluggable_retinanet_yacs_build_model():
    cfg = _yacs_cfg()
    cfg.MODEL.META_ARCHITECTURE = "PluggableRetinaNet"
    cfg.MODEL.CLS_LOSS.NAME = "EqualizedFocalLoss"
    model = build_model(cfg)
    assert isinstance(model, PluggableRetinaNet)
    assert isinstance(model.cls_loss, EqualizedFocalLoss) and model.cls_loss.num_classes == 3
    cfg.MODEL.CLS_LOSS.NAME = ""
    assert build_model(copy.deepcopy(cfg)).cls_loss is None


@pytest.mark.parametrize("name", ["retinanet_pluggable", "fcos_pluggable", "atss"])
def test_per_class_candidates_for_ap_fixed(name):
    """``test_topk_per_class`` = 0 keeps the detector's own candidates (Detectron2's for the
    pluggable ones); > 0 keeps the k best anchors of every class."""
    from detectron2.modeling.meta_arch.dense_detector import DenseDetector

    model = instantiate(load_model_cfg(name, num_classes=5)).eval()
    g = torch.Generator().manual_seed(0)
    anchors = Boxes(torch.rand(40, 4, generator=g).sort(dim=1).values * 100)
    scores = torch.rand(40, 5, generator=g)
    scores[:, 0] += 1.0  # class 0 would take every global slot
    deltas = torch.randn(40, 4, generator=g) * 0.1
    args = (anchors, scores, deltas, 0.05, 8, (100, 100))
    got = model._decode_per_level_predictions(*args)
    if name != "atss":  # the pluggable detectors: exactly Detectron2's rule
        ref = DenseDetector._decode_per_level_predictions(model, *args)
        assert torch.equal(got.scores, ref.scores) and torch.equal(
            got.pred_classes, ref.pred_classes
        )
    assert set(got.pred_classes.tolist()) == {0}
    model.test_topk_per_class = 3
    got = model._decode_per_level_predictions(*args)
    assert sorted(got.pred_classes.tolist()) == sorted(list(range(5)) * 3)
    for k in range(5):
        assert torch.equal(got.scores[got.pred_classes == k], scores[:, k].topk(3).values)
