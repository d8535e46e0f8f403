"""The official EFL detector's architecture and test pipeline as LazyConfig edits.

With the same weights, an efl_d2 ATSS computes what the official (United-Perception 0.1.0)
improved-baseline detector computes once :func:`use_official_architecture` has switched its P6/P7
(:class:`OfficialLastLevelP6P7`, built by :func:`build_fpn_with_official_top_block`), its input
normalisation and image format, and :func:`use_official_inference` its test resize, padding, box
clipping and NMS. Converting the official checkpoint files is :mod:`efl_d2.checkpoint.official`;
checking a model against the official computation, :func:`efl_d2.checkpoint.check_official_architecture`.
See ``docs/official_checkpoint_format.md`` §5.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = [
    "OFFICIAL_PIXEL_MEAN",
    "OFFICIAL_PIXEL_STD",
    "OfficialLastLevelP6P7",
    "build_fpn_with_official_top_block",
    "official_architecture",
    "official_inference",
    "use_official_architecture",
    "use_official_inference",
]

# Official pre-processing: RGB, to_tensor (/255), ImageNet mean/std -> detectron2's 0..255 scale
# (the statistics torchvision's ImageNet models are trained with, too).
OFFICIAL_PIXEL_MEAN = [123.675, 116.28, 103.53]
OFFICIAL_PIXEL_STD = [58.395, 57.12, 57.375]
# The same on the [0, 1] scale, with ATSS(pixel_divisor=255): the official float arithmetic.
UNIT_PIXEL_MEAN = [0.485, 0.456, 0.406]
UNIT_PIXEL_STD = [0.229, 0.224, 0.225]


class OfficialLastLevelP6P7(nn.Module):
    """The official FPN's extra levels: P6 = p6(lateral(C5)), P7 = p7(P6), no ReLU in between.

    ``lateral`` is the FPN's own C5 lateral conv when the FPN is built with
    :func:`build_fpn_with_official_top_block` (one shared module, as in the official code); a
    block used on its own owns a separate lateral conv.
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        """
        Args:
            in_channels: channels of the bottom-up feature ``in_feature`` (C5).
            out_channels: FPN channels.
        """
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.lateral = nn.Conv2d(in_channels, out_channels, 1)
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.lateral, self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2's c2_xavier_fill
            nn.init.constant_(conv.bias, 0)

    def forward(self, c5: torch.Tensor) -> list:
        p6 = self.p6(self.lateral(c5))
        return [p6, self.p7(p6)]


def build_fpn_with_official_top_block(**fpn_kwargs) -> nn.Module:
    """detectron2's ``FPN(**fpn_kwargs)`` whose :class:`OfficialLastLevelP6P7` top block shares
    the FPN's lateral conv of its input feature (use as ``model.backbone._target_``)."""
    from detectron2.modeling.backbone import FPN

    fpn = FPN(**fpn_kwargs)
    top = fpn.top_block
    if isinstance(top, OfficialLastLevelP6P7):
        # FPN.lateral_convs run from the coarsest input feature to the finest
        coarsest = fpn.in_features[-1]
        if top.in_feature != coarsest:
            raise ValueError(
                f"OfficialLastLevelP6P7 reads {top.in_feature!r} but the FPN's coarsest input is "
                f"{coarsest!r}"
            )
        top.lateral = fpn.lateral_convs[0]
    return fpn


def use_official_architecture(cfg) -> Any:
    """:func:`official_architecture` on a whole LazyConfig (``cfg.model``, ``cfg.dataloader``).

    Returns ``cfg``.
    """
    official_architecture(cfg.model, cfg.get("dataloader", None))
    return cfg


def official_architecture(model, dataloader=None) -> Any:
    """Edit an ATSS model config (and the data mappers of ``dataloader``, if given) in place so
    that it computes what the official detector computes with the same weights: official P6/P7,
    torchvision-style RGB normalisation (/255, then ImageNet mean/std, in the official float
    arithmetic), stride in the 3x3 conv, and RGB images from the data mappers. Anchors (scales
    [6, 8], offset 0.5), box coder and IoU branch are already efl_d2's improved baseline;
    :func:`check_official_architecture` verifies. ``configs/official/`` applies it as a config
    diff.

    Returns ``model``.
    """
    from detectron2.config import LazyCall as L
    from omegaconf import OmegaConf

    backbone = model.backbone
    bottom_up = backbone.bottom_up
    stages = bottom_up.get("stages", None)
    depth = int(OmegaConf.select(bottom_up, "stages.depth", default=50) or 50)
    if stages is not None and depth >= 50:
        stages.stride_in_1x1 = False
    res5_channels = 2048 if depth >= 50 else 512
    backbone._target_ = build_fpn_with_official_top_block
    backbone.top_block = L(OfficialLastLevelP6P7)(
        in_channels=res5_channels, out_channels="${..out_channels}", in_feature="res5"
    )
    model.pixel_mean = list(UNIT_PIXEL_MEAN)
    model.pixel_std = list(UNIT_PIXEL_STD)
    model.pixel_divisor = 255.0
    if "input_format" in model:
        model.input_format = "RGB"
    if dataloader is not None:
        for split in ("train", "test"):
            mapper = OmegaConf.select(dataloader, f"{split}.mapper", default=None)
            if mapper is not None and "image_format" in mapper:
                mapper.image_format = "RGB"
    return model


def use_official_inference(cfg, *, nms_convention: str = "united_perception_0.1.0") -> Any:
    """:func:`official_inference` on a whole LazyConfig (``cfg.model``, ``cfg.dataloader``).

    Returns ``cfg``.
    """
    official_inference(cfg.model, cfg.get("dataloader", None), nms_convention=nms_convention)
    return cfg


def official_inference(
    model, dataloader=None, *, nms_convention: str = "united_perception_0.1.0"
) -> Any:
    """Edit an ATSS model config and its ``dataloader`` (in place) so that inference follows the
    official test pipeline around the network (to be used with :func:`official_architecture`):

    - the test mapper's ``ResizeShortestEdge`` becomes
      :class:`~efl_d2.data.transforms.OpenCVResizeShortestEdge` (same sizes: one factor,
      OpenCV's output size and pixels);
    - the batch is padded to a multiple of 64 (``model.size_divisibility``);
    - boxes are clipped to [0, w - 1] in inclusive pixels and rescaled to the original image as
      the official result dump does, empty boxes kept (``model.test_box_convention``), so that
      detectron2's LVISEvaluator writes the official json boxes (width x2 - x1 + 1);
    - NMS as ``nms_convention`` (default: the release's UP 0.1.0 code, no "+1").

    Returns ``model``.
    """
    from detectron2.data.transforms import ResizeShortestEdge
    from omegaconf import OmegaConf

    from ..data.transforms import OpenCVResizeShortestEdge

    model.size_divisibility = 64
    model.test_box_convention = "united_perception"
    model.test_nms_convention = nms_convention
    augmentations = (
        OmegaConf.select(dataloader, "test.mapper.augmentations", default=None)
        if dataloader is not None
        else None
    )
    for aug in augmentations or []:
        target = aug.get("_target_")
        # a class in a loaded .py config, its dotted name in a saved .yaml one
        if target is ResizeShortestEdge or (
            isinstance(target, str) and target.rsplit(".", 1)[-1] == "ResizeShortestEdge"
        ):
            aug._target_ = OpenCVResizeShortestEdge
    return model
