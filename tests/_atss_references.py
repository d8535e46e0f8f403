"""Tiny detectors and their inputs shared by the ATSS / PAA tests (test_atss, test_paa, test_cuda).

- ``TinyBackbone``: five p3..p7 feature maps (``STRIDES``, ``CHANNELS`` channels), fast on CPU;
- ``make_atss`` / ``make_paa``: seeded ATSS and PAA models on top of it;
- ``make_batch``: two seeded 96x128 images, one with two annotated boxes and one with none, and
  ``train_on_fixed_batch``: a few SGD steps on that batch, returning the total losses.
"""

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn
from torch.nn import functional as F

from efl_d2.modeling import ATSS, PAA, ATSSHead, ATSSMatcher

STRIDES = [8, 16, 32, 64, 128]
CHANNELS = 64  # GroupNorm(32) needs > 1 value per group even on 1x1 maps (P7)


class TinyBackbone(Backbone):
    """Five stride-2^l feature maps p3..p7 with CHANNELS channels; fast enough for CPU tests."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, CHANNELS, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(CHANNELS, CHANNELS, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(CHANNELS, CHANNELS, 3, 2, 1),
        )  # fmt: skip
        self.down = nn.ModuleList(nn.Conv2d(CHANNELS, CHANNELS, 3, 2, 1) for _ in range(4))

    def forward(self, x):
        x = self.stem(x)
        out = {"p3": x}
        for level, conv in zip(range(4, 8), self.down):
            x = conv(F.relu(x))
            out[f"p{level}"] = x
        return out

    def output_shape(self):
        return {f"p{l}": ShapeSpec(channels=CHANNELS, stride=2**l) for l in range(3, 8)}


def make_atss(num_classes=4, scales=(6, 8), topk=18, cls_loss=None, **kwargs):
    torch.manual_seed(0)
    head = ATSSHead(
        input_shape=[ShapeSpec(channels=CHANNELS)] * 5,
        num_classes=num_classes,
        num_anchors=len(scales),
        conv_dims=[CHANNELS, CHANNELS],
        prior_prob=kwargs.pop("prior_prob", 0.001),
    )
    return ATSS(
        backbone=TinyBackbone(),
        head=head,
        anchor_generator=DefaultAnchorGenerator(
            sizes=[[k * s for k in scales] for s in STRIDES],
            aspect_ratios=[1.0],
            strides=STRIDES,
            offset=0.5,
        ),
        anchor_matcher=ATSSMatcher(topk=topk),
        num_classes=num_classes,
        cls_loss=cls_loss,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
        **kwargs,
    )


def make_instances(image_hw, boxes, classes):
    inst = Instances(image_hw)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def make_batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    hw = (96, 128)
    return [
        {
            "image": torch.rand(3, *hw, generator=gen) * 255,
            "instances": make_instances(hw, [[8, 10, 60, 70], [70, 20, 124, 52]], [1, 3]),
        },
        {"image": torch.rand(3, *hw, generator=gen) * 255, "instances": make_instances(hw, [], [])},
    ]


def train_on_fixed_batch(model, loss_keys, steps=10):
    """SGD steps on make_batch() (its second image has no annotations); the total losses."""
    batch = make_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    with EventStorage():
        for _ in range(steps):
            losses = model(batch)
            assert set(losses) == loss_keys
            total = sum(losses.values())
            assert torch.isfinite(total)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            totals.append(total.item())
    return totals


def make_paa(num_classes=4, **kwargs):
    torch.manual_seed(0)
    head = ATSSHead(
        input_shape=[ShapeSpec(channels=CHANNELS)] * 5,
        num_classes=num_classes,
        num_anchors=1,
        conv_dims=[CHANNELS, CHANNELS],
        prior_prob=0.01,
    )
    return PAA(
        backbone=TinyBackbone(),
        head=head,
        anchor_generator=DefaultAnchorGenerator(
            sizes=[[8 * s] for s in STRIDES], aspect_ratios=[1.0], strides=STRIDES, offset=0.5
        ),
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        num_classes=num_classes,
        box_loss_weight=1.3,
        quality_loss_weight=0.5,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
        **kwargs,
    )
