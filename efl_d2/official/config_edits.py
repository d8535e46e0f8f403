"""The official EFL detector's architecture and test pipeline as LazyConfig edits.

With the same weights, an efl_d2 ATSS computes what the official (United-Perception 0.1.0)
improved-baseline detector computes once :func:`official_architecture` has switched its P6/P7,
its input normalisation and image format, and :func:`official_inference` its test resize,
padding, box clipping and NMS. Both make the model an :class:`~efl_d2.official.OfficialATSS`.
See ``docs/official_checkpoint_format.md`` §5 and ``docs/official_conventions.md`` §1.
"""

from __future__ import annotations

from typing import Any

from detectron2.config import LazyCall as L
from detectron2.data.transforms import ResizeShortestEdge
from omegaconf import OmegaConf

from ..modeling.atss import ATSS
from .architecture import (
    UNIT_PIXEL_MEAN,
    UNIT_PIXEL_STD,
    OfficialLastLevelP6P7,
    build_fpn_with_official_top_block,
)
from .detector import OfficialATSS
from .transforms import OpenCVResizeShortestEdge

__all__ = [
    "official_architecture",
    "official_inference",
    "use_official_architecture",
    "use_official_inference",
]


def _is(target: Any, cls: type) -> bool:
    """Whether a ``_target_`` names ``cls``: the class in a loaded .py config, its dotted name in
    a saved .yaml one."""
    return target is cls or (isinstance(target, str) and target.rsplit(".", 1)[-1] == cls.__name__)


def _make_official_atss(model) -> None:
    if not (_is(model.get("_target_"), ATSS) or _is(model.get("_target_"), OfficialATSS)):
        raise ValueError(
            f"the official conventions apply to an ATSS model config, got {model.get('_target_')}"
        )
    model._target_ = OfficialATSS


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
    arithmetic, by :class:`~efl_d2.official.OfficialATSS`), stride in the 3x3 conv, and RGB
    images from the data mappers. Anchors (scales [6, 8], offset 0.5), box coder and IoU branch
    are already efl_d2's improved baseline; :func:`~efl_d2.official.check_official_architecture`
    verifies. ``configs/official/`` applies it as a config diff.

    Returns ``model``.
    """
    _make_official_atss(model)
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


def use_official_inference(cfg, *, nms_convention: str = "official") -> Any:
    """:func:`official_inference` on a whole LazyConfig (``cfg.model``, ``cfg.dataloader``).

    Returns ``cfg``.
    """
    official_inference(cfg.model, cfg.get("dataloader", None), nms_convention=nms_convention)
    return cfg


def official_inference(model, dataloader=None, *, nms_convention: str = "official") -> Any:
    """Edit an ATSS model config and its ``dataloader`` (in place) so that inference follows the
    official test pipeline around the network (to be used with :func:`official_architecture`):

    - the test mapper's ``ResizeShortestEdge`` becomes
      :class:`~efl_d2.official.OpenCVResizeShortestEdge` (same sizes: one factor, OpenCV's output
      size and pixels);
    - the batch is padded to a multiple of 64 (``model.size_divisibility``);
    - boxes are clipped to [0, w - 1] in inclusive pixels and rescaled to the original image as
      the official result dump does, empty boxes kept (``model.box_convention``), so that
      detectron2's LVISEvaluator writes the official json boxes (width x2 - x1 + 1);
    - NMS as ``nms_convention`` (default: the release's, UP 0.1.0, no "+1").

    Returns ``model``.
    """
    _make_official_atss(model)
    model.size_divisibility = 64
    model.box_convention = "official"
    model.nms_convention = nms_convention
    augmentations = (
        OmegaConf.select(dataloader, "test.mapper.augmentations", default=None)
        if dataloader is not None
        else None
    )
    for aug in augmentations or []:
        if _is(aug.get("_target_"), ResizeShortestEdge):
            aug._target_ = OpenCVResizeShortestEdge
    return model
