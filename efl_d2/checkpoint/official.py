"""The official EFL release (ModelTC United-Perception / EOD ``.pth``) -> efl_d2's ATSS.

Reference: ``docs/official_checkpoint_format.md``. What this module handles:

- **Top-level layout.** The weights sit under ``"model"`` (normal saves), ``"state_dict"`` (the
  signal-triggered auto-checkpoint) or are the whole dict; keys may carry DDP's ``module.``.
- **Names.** ``backbone.layer0.*`` / the 0.1.0-era stem aliases ``backbone.conv1``/``bn1``,
  ``backbone.layer{i}.{b}.{conv,bn}{j}``, ``downsample.{0,1}`` -> detectron2 ResNet;
  ``neck.c{l}_lateral`` / ``neck.p{l}_conv`` -> ``backbone.fpn_lateral{l}`` /
  ``backbone.fpn_output{l}``, ``neck.p6_conv`` / ``p7_conv`` -> ``backbone.top_block.p6`` / ``p7``;
  ``roi_head.{cls,box}_subnet.{i}`` -> ``head.{cls,bbox}_subnet.{i}`` (same indices: conv at
  0/3/6/9, GroupNorm at 1/4/7/10, no conv bias), ``cls_subnet_pred`` -> ``head.cls_score``,
  ``box_subnet_pred`` -> ``head.bbox_pred``, ``iou_pred`` -> ``head.quality_pred``;
  ``post_process.cls_loss.{pos_grad,neg_grad,pos_neg}`` -> ``cls_loss.*`` (EFL statistics).
  ``num_batches_tracked`` counters are dropped.
- **Class-logit channel layout.** Paper-era code is anchor-major (channel = a*C + c), like
  efl_d2's ``ATSSHead``: copied as is. Checkpoints used with the later class-major post-process
  (channel = c*A + a) are permuted with ``cls_layout="class_major"``; shapes are the same, so this
  cannot be detected from the file.
- **Anchor order.** Official anchor 0 has side 6*stride and anchor 1 side 8*stride; when the
  target model orders its anchors differently, the per-anchor channel blocks of the three
  prediction convs are permuted to the model's order (:func:`adapt_to_model`).
- **Box deltas.** The official coder uses weights (1, 1, 1, 1), centre = x1 + w/2 with the +1
  width convention, which equals detectron2's ``Box2BoxTransform((1, 1, 1, 1))`` on anchors with
  ``offset=0.5`` and sides k*stride, so ``box_subnet_pred`` is copied unchanged. A model with other
  weights or anchor offset is reported by :func:`check_official_architecture`.
- **P6/P7.** Official P6 = conv(lateral(C5)) and P7 = conv(P6) with no ReLU. detectron2's
  ``LastLevelP6P7`` computes neither; :class:`OfficialLastLevelP6P7` with
  :func:`build_fpn_with_official_top_block` (applied by :func:`use_official_architecture`) does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "OFFICIAL_EFL_R50_URL",
    "OFFICIAL_PIXEL_MEAN",
    "OFFICIAL_PIXEL_STD",
    "OfficialLastLevelP6P7",
    "adapt_to_model",
    "build_fpn_with_official_top_block",
    "check_official_architecture",
    "convert_official_to_d2",
    "is_official_state_dict",
    "official_key_to_d2",
    "unwrap_official_checkpoint",
    "use_official_architecture",
    "use_official_inference",
]

# Linked from the official benchmark table (EOD 0.1.0 docs; same file at United-Perception HEAD).
OFFICIAL_EFL_R50_URL = (
    "https://github.com/ModelTC/United-Perception/releases/download/0.1.0/"
    "efl_improved_baseline_r50.pth"
)
# Official pre-processing: RGB, to_tensor (/255), ImageNet mean/std -> detectron2's 0..255 scale.
OFFICIAL_PIXEL_MEAN = [123.675, 116.28, 103.53]
OFFICIAL_PIXEL_STD = [58.395, 57.12, 57.375]
# The same on the [0, 1] scale, with ATSS(pixel_divisor=255): the official float arithmetic.
_UNIT_PIXEL_MEAN = [0.485, 0.456, 0.406]
_UNIT_PIXEL_STD = [0.229, 0.224, 0.225]

_OFFICIAL_ROOTS = ("backbone.", "neck.", "roi_head.", "post_process.")
_EFL_BUFFERS = ("pos_grad", "neg_grad", "pos_neg")
_CLS_LAYOUTS = ("anchor_major", "class_major")


# ----------------------------------------------------------------------------- file layout


def unwrap_official_checkpoint(obj: Any) -> tuple[dict, dict]:
    """The weights of an official checkpoint, whatever its top-level layout.

    Args:
        obj: what ``torch.load`` returned: ``{"model": sd, ...}``, ``{"state_dict": sd, ...}``
            or the state dict itself.

    Returns:
        (state dict with a leading ``module.`` stripped from every key, info dict with
        ``layout`` in {"model", "state_dict", "bare"} and ``module_prefix`` (bool)).
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a dict from torch.load, got {type(obj).__name__}")
    if isinstance(obj.get("model"), Mapping):
        layout, sd = "model", obj["model"]
    elif isinstance(obj.get("state_dict"), Mapping):
        layout, sd = "state_dict", obj["state_dict"]
    else:
        layout, sd = "bare", obj
    prefixed = bool(sd) and all(k.startswith("module.") for k in sd)
    if prefixed:
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd), {"layout": layout, "module_prefix": prefixed}


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether the (unwrapped, un-prefixed) keys are the official EOD/UP RetinaHeadWithIOU layout."""
    keys = list(state_dict)
    return (
        bool(keys)
        and "roi_head.cls_subnet_pred.weight" in state_dict
        and all(k.startswith(_OFFICIAL_ROOTS) for k in keys)
    )


# ----------------------------------------------------------------------------- key mapping

_RULES = [
    # stem: 0.1.0 aliases and the layer0 Sequential (conv at 0, BN at 1)
    (re.compile(r"^backbone\.(?:conv1|layer0\.0)\.(weight)$"), r"backbone.bottom_up.stem.conv1.\1"),
    (re.compile(r"^backbone\.(?:bn1|layer0\.1)\.(\w+)$"), r"backbone.bottom_up.stem.conv1.norm.\1"),
    # residual stages: layer{i} -> res{i+1}
    (re.compile(r"^backbone\.layer([1-9])\.(\d+)\.conv(\d)\.weight$"), None),
    (re.compile(r"^backbone\.layer([1-9])\.(\d+)\.bn(\d)\.(\w+)$"), None),
    (re.compile(r"^backbone\.layer([1-9])\.(\d+)\.downsample\.([01])\.(\w+)$"), None),
    # FPN
    (re.compile(r"^neck\.c(\d)_lateral\.(weight|bias)$"), r"backbone.fpn_lateral\1.\2"),
    (re.compile(r"^neck\.p([3-5])_conv\.(weight|bias)$"), r"backbone.fpn_output\1.\2"),
    (re.compile(r"^neck\.p([6-9])_conv\.(weight|bias)$"), r"backbone.top_block.p\1.\2"),
    # head
    (re.compile(r"^roi_head\.cls_subnet\.(\d+)\.(weight|bias)$"), r"head.cls_subnet.\1.\2"),
    (re.compile(r"^roi_head\.box_subnet\.(\d+)\.(weight|bias)$"), r"head.bbox_subnet.\1.\2"),
    (re.compile(r"^roi_head\.cls_subnet_pred\.(weight|bias)$"), r"head.cls_score.\1"),
    (re.compile(r"^roi_head\.box_subnet_pred\.(weight|bias)$"), r"head.bbox_pred.\1"),
    (re.compile(r"^roi_head\.iou_pred\.(weight|bias)$"), r"head.quality_pred.\1"),
    # EFL gradient statistics (the only state of the official post-process)
    (re.compile(r"^post_process\.cls_loss\.(pos_grad|neg_grad|pos_neg)$"), r"cls_loss.\1"),
]


def official_key_to_d2(key: str) -> str | None:
    """The efl_d2 ATSS name of one official key (``module.`` already stripped), or None for keys
    that have no counterpart and are dropped (``num_batches_tracked``).

    Raises:
        KeyError: for a key outside the documented official layout.
    """
    if key.endswith(".num_batches_tracked"):
        return None
    for pattern, repl in _RULES:
        m = pattern.match(key)
        if not m:
            continue
        if repl is not None:
            return m.expand(repl)
        stage, block = int(m.group(1)), m.group(2)
        prefix = f"backbone.bottom_up.res{stage + 1}.{block}."
        if ".downsample." in key:
            index, leaf = m.group(3), m.group(4)
            return prefix + ("shortcut." if index == "0" else "shortcut.norm.") + leaf
        if ".bn" in key:
            return prefix + f"conv{m.group(3)}.norm.{m.group(4)}"
        return prefix + f"conv{m.group(3)}.weight"
    raise KeyError(f"{key!r} is not a key of the official EFL checkpoint layout")


def _stem_aliases(sd: Mapping[str, torch.Tensor]) -> dict:
    """Drop the 0.1.0-era ``backbone.conv1``/``bn1`` aliases when ``layer0`` is present, after
    checking the two copies are the same tensors (they share storage in a genuine file)."""
    out = dict(sd)
    for alias, canonical in (
        ("backbone.conv1.", "backbone.layer0.0."),
        ("backbone.bn1.", "backbone.layer0.1."),
    ):
        for key in [k for k in sd if k.startswith(alias)]:
            twin = canonical + key[len(alias) :]
            if twin not in sd:
                continue  # only the alias exists: it is mapped on its own
            a, b = sd[key], sd[twin]
            if a.shape != b.shape or not torch.equal(a, b):
                raise ValueError(
                    f"official checkpoint: stem alias {key!r} differs from {twin!r}; in the "
                    "released code they are one tensor, so this file is not a genuine checkpoint"
                )
            del out[key]
    return out


def convert_official_to_d2(obj: Any, *, cls_layout: str = "anchor_major") -> tuple[dict, dict]:
    """Convert an official EFL checkpoint to efl_d2 ATSS names (in the official anchor order).

    Args:
        obj: the loaded file (any top-level layout, see :func:`unwrap_official_checkpoint`) or an
            already-unwrapped state dict.
        cls_layout: channel layout of ``cls_subnet_pred`` in the file: "anchor_major"
            (paper-era code, a*C + c) or "class_major" (c*A + a, post-process ``class_first``).

    Returns:
        (state dict ``{efl_d2 name: tensor}``, info) where info holds ``num_classes``,
        ``num_anchors``, ``layout``, ``module_prefix``, ``cls_layout``, ``dropped`` (keys without
        counterpart) and ``has_efl_statistics``.

    Raises:
        KeyError: keys outside the documented layout or missing prediction layers (listed).
        ValueError: inconsistent prediction-layer shapes.
    """
    if cls_layout not in _CLS_LAYOUTS:
        raise ValueError(f"cls_layout must be one of {_CLS_LAYOUTS}, got {cls_layout!r}")
    sd, info = unwrap_official_checkpoint(obj)
    if not is_official_state_dict(sd):
        sample = sorted(sd)[:5]
        raise KeyError(
            "not an official EFL checkpoint: expected keys under backbone./neck./roi_head./"
            f"post_process. including roi_head.cls_subnet_pred.weight; first keys: {sample}"
        )
    sd = _stem_aliases(sd)
    out, dropped, unknown = {}, [], []
    for key, value in sd.items():
        try:
            new = official_key_to_d2(key)
        except KeyError:
            unknown.append(key)
            continue
        if new is None:
            dropped.append(key)
            continue
        out[new] = torch.as_tensor(value).detach().cpu().clone()
    if unknown:
        raise KeyError(
            f"{len(unknown)} keys of the checkpoint are outside the official EFL layout and have "
            f"no efl_d2 counterpart: {unknown[:10]}" + (" ..." if len(unknown) > 10 else "")
        )
    missing = [
        k
        for k in ("head.cls_score.weight", "head.bbox_pred.weight", "head.quality_pred.weight")
        if k not in out
    ]
    if missing:
        raise KeyError(f"official checkpoint lacks prediction layers: {missing}")

    num_anchors, rem = divmod(out["head.bbox_pred.weight"].shape[0], 4)
    cls_rows = out["head.cls_score.weight"].shape[0]
    if (
        rem
        or num_anchors == 0
        or cls_rows % num_anchors
        or out["head.quality_pred.weight"].shape[0] != num_anchors
    ):
        raise ValueError(
            "inconsistent prediction layers: box_subnet_pred has "
            f"{out['head.bbox_pred.weight'].shape[0]} outputs (4 per anchor), cls_subnet_pred "
            f"{cls_rows}, iou_pred {out['head.quality_pred.weight'].shape[0]} (1 per anchor)"
        )
    num_classes = cls_rows // num_anchors
    stats = out.get("cls_loss.pos_neg")
    if stats is not None and stats.numel() != num_classes:
        raise ValueError(
            f"EFL statistics have {stats.numel()} classes but cls_subnet_pred has {num_classes}"
        )
    if cls_layout == "class_major":
        for name in ("head.cls_score.weight", "head.cls_score.bias"):
            t = out[name]
            out[name] = (
                t.reshape(num_classes, num_anchors, *t.shape[1:])
                .transpose(0, 1)
                .reshape(t.shape)
                .contiguous()
            )
    info.update(
        num_classes=num_classes,
        num_anchors=num_anchors,
        cls_layout=cls_layout,
        dropped=sorted(dropped),
        has_efl_statistics=stats is not None,
    )
    return out, info


# ----------------------------------------------------------------------------- target model


def _unwrap_model(model: nn.Module) -> nn.Module:
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


def _anchor_permutation(model: nn.Module, num_anchors: int) -> list | None:
    """perm[a] = official anchor index feeding the model's anchor a (official: ascending side)."""
    gen = getattr(model, "anchor_generator", None)
    cell_anchors = list(getattr(gen, "cell_anchors", []) or [])
    if not cell_anchors:
        return None
    perms = set()
    for cells in cell_anchors:
        cells = cells.detach().cpu().double()
        if len(cells) != num_anchors:
            raise ValueError(
                f"the checkpoint has {num_anchors} anchors per location but the model's anchor "
                f"generator makes {len(cells)}; set the anchor sizes to [6*stride, 8*stride]"
            )
        widths = (cells[:, 2] - cells[:, 0]).tolist()
        # rank of each model anchor among the sides: anchor with the smallest side <- official 0
        order = sorted(range(len(widths)), key=lambda a: (widths[a], a))
        perm = [0] * len(widths)
        for rank, a in enumerate(order):
            perm[a] = rank
        perms.add(tuple(perm))
    if len(perms) != 1:
        raise ValueError(f"the model's anchor order differs between levels: {sorted(perms)}")
    return list(perms.pop())


def _permute_anchor_blocks(t: torch.Tensor, perm: list, per_anchor: int) -> torch.Tensor:
    blocks = t.reshape(len(perm), per_anchor, *t.shape[1:])
    return blocks[torch.as_tensor(perm)].reshape(t.shape).contiguous()


def adapt_to_model(
    state_dict: dict, model: nn.Module, info: dict | None = None
) -> tuple[dict, list]:
    """Adapt a converted state dict (official anchor order) to a concrete model.

    - permutes the per-anchor blocks of ``head.cls_score`` / ``bbox_pred`` / ``quality_pred`` when
      the model's anchors per location are not in ascending-side order;
    - fills ``backbone.top_block.lateral`` (the C5 lateral the official P6 reads) from
      ``backbone.fpn_lateral5`` when the model has an :class:`OfficialLastLevelP6P7`;
    - drops the EFL statistics when the model's loss keeps none (e.g. focal loss).

    Returns:
        (adapted state dict, notes for the log).
    """
    model = _unwrap_model(model)
    sd = dict(state_dict)
    notes = []
    if "head.bbox_pred.weight" in sd:
        num_anchors = sd["head.bbox_pred.weight"].shape[0] // 4
        perm = _anchor_permutation(model, num_anchors)
        if perm is not None and perm != sorted(perm):
            num_classes = sd["head.cls_score.weight"].shape[0] // num_anchors
            for name, per in (
                ("head.cls_score", num_classes),
                ("head.bbox_pred", 4),
                ("head.quality_pred", 1),
            ):
                for leaf in ("weight", "bias"):
                    if f"{name}.{leaf}" in sd:
                        sd[f"{name}.{leaf}"] = _permute_anchor_blocks(
                            sd[f"{name}.{leaf}"], perm, per
                        )
            notes.append(f"anchor channels permuted to the model's anchor order {perm}")
    model_keys = set(model.state_dict())
    top_lateral = [k for k in model_keys if k.startswith("backbone.top_block.lateral.")]
    if top_lateral:
        laterals = sorted(
            {int(m.group(1)) for k in sd if (m := re.match(r"^backbone\.fpn_lateral(\d)\.", k))}
        )
        if laterals:
            src = f"backbone.fpn_lateral{laterals[-1]}."
            for k in top_lateral:
                leaf = k[len("backbone.top_block.lateral.") :]
                if src + leaf in sd and k not in sd:
                    sd[k] = sd[src + leaf]
            notes.append(f"top_block.lateral <- {src.rstrip('.')} (official P6 reads lateral(C5))")
    stats = [f"cls_loss.{b}" for b in _EFL_BUFFERS]
    if any(k in sd for k in stats) and not any(k in model_keys for k in stats):
        for k in stats:
            sd.pop(k, None)
        notes.append("EFL statistics dropped: the model's classification loss keeps none")
    return sd, notes


def check_official_architecture(model: nn.Module) -> list:
    """Differences between ``model`` and the official improved-baseline detector that change
    what converted official weights compute (key names and shapes are checked on load).

    Returns:
        human-readable strings; empty when the model reproduces the official computation.
    """
    model = _unwrap_model(model)
    problems = []
    b2b = getattr(model, "box2box_transform", None)
    weights = tuple(float(w) for w in getattr(b2b, "weights", (1.0,) * 4))
    if weights != (1.0, 1.0, 1.0, 1.0):
        problems.append(
            f"box2box_transform weights are {weights}; official deltas use (1, 1, 1, 1)"
        )
    if hasattr(b2b, "scale_clamp") and not math.isclose(b2b.scale_clamp, math.log(1000.0 / 16)):
        problems.append(f"box delta clamp {b2b.scale_clamp}; official log(1000/16)")
    gen = getattr(model, "anchor_generator", None)
    if gen is not None:
        if not math.isclose(float(getattr(gen, "offset", 0.5)), 0.5):
            problems.append(
                f"anchor offset {gen.offset}; official anchor centres are (i + 0.5) * stride "
                "(offset 0.5)"
            )
        strides = list(getattr(gen, "strides", []))
        for stride, cells in zip(strides, getattr(gen, "cell_anchors", [])):
            w = sorted((cells[:, 2] - cells[:, 0]).tolist())
            h = sorted((cells[:, 3] - cells[:, 1]).tolist())
            if w != h or [round(x / stride, 6) for x in w] != [6.0, 8.0]:
                problems.append(
                    f"anchors at stride {stride} have sides {w} x {h}; official: square, "
                    f"{6 * stride} and {8 * stride}"
                )
                break
    if getattr(model, "quality", "iou") != "iou":
        problems.append(f"quality branch is {model.quality!r}; the official head predicts IoU")
    backbone = getattr(model, "backbone", None)
    top = getattr(backbone, "top_block", None)
    if top is not None and not isinstance(top, OfficialLastLevelP6P7):
        problems.append(
            f"P6/P7 come from {type(top).__name__}(in_feature={getattr(top, 'in_feature', '?')!r})"
            "; official P6 = conv(lateral(C5)), P7 = conv(P6) without ReLU "
            "(use efl_d2.checkpoint.official.use_official_architecture)"
        )
    bottom_up = getattr(backbone, "bottom_up", None)
    res3 = getattr(bottom_up, "res3", None)
    bottleneck = res3 is not None and hasattr(res3[0], "conv3")
    if bottleneck and tuple(res3[0].conv1.stride) != (1, 1):
        problems.append("stride in the 1x1 conv (stride_in_1x1=True); official: in the 3x3 conv")
    fmt = getattr(model, "input_format", None)
    if fmt is not None and fmt != "RGB":
        problems.append(f"input_format {fmt!r}; the official model reads RGB")
    mean = getattr(model, "pixel_mean", None)
    std = getattr(model, "pixel_std", None)
    if mean is not None and std is not None:
        divisor = float(getattr(model, "pixel_divisor", 1.0))  # compare on the 0..255 scale
        m = [round(float(x) * divisor, 3) for x in mean.flatten()]
        s = [round(float(x) * divisor, 3) for x in std.flatten()]
        if m != [round(x, 3) for x in OFFICIAL_PIXEL_MEAN] or s != [
            round(x, 3) for x in OFFICIAL_PIXEL_STD
        ]:
            problems.append(
                f"pixel mean/std {m}/{s}; official (RGB, ImageNet) {OFFICIAL_PIXEL_MEAN}/"
                f"{OFFICIAL_PIXEL_STD}"
            )
    return problems


# ----------------------------------------------------------------------------- official P6/P7


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
    """Edit a LazyConfig (in place) so its ATSS computes what the official detector computes with
    the same weights: official P6/P7, torchvision-style RGB normalisation (/255, then ImageNet
    mean/std, in the official float arithmetic), stride in the 3x3 conv, and RGB images from the
    data mappers. Anchors (scales [6, 8], offset 0.5), box coder and IoU branch are already
    efl_d2's improved baseline; :func:`check_official_architecture` verifies.

    Returns ``cfg``.
    """
    from detectron2.config import LazyCall as L
    from omegaconf import OmegaConf

    model = cfg.model
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
    model.pixel_mean = list(_UNIT_PIXEL_MEAN)
    model.pixel_std = list(_UNIT_PIXEL_STD)
    model.pixel_divisor = 255.0
    if "input_format" in model:
        model.input_format = "RGB"
    dataloader = cfg.get("dataloader", None)
    if dataloader is not None:
        for split in ("train", "test"):
            mapper = OmegaConf.select(dataloader, f"{split}.mapper", default=None)
            if mapper is not None and "image_format" in mapper:
                mapper.image_format = "RGB"
    return cfg


def use_official_inference(cfg, *, nms_convention: str = "united_perception_0.1.0") -> Any:
    """Edit a LazyConfig (in place) so that inference follows the official test pipeline around
    the network (to be used with :func:`use_official_architecture`):

    - the test mapper's ``ResizeShortestEdge`` becomes
      :class:`~efl_d2.data.transforms.OpenCVResizeShortestEdge` (same sizes: one factor,
      OpenCV's output size and pixels);
    - the batch is padded to a multiple of 64 (``model.size_divisibility``);
    - boxes are clipped to [0, w - 1] in inclusive pixels and rescaled to the original image as
      the official result dump does, empty boxes kept (``model.test_box_convention``), so that
      detectron2's LVISEvaluator writes the official json boxes (width x2 - x1 + 1);
    - NMS as ``nms_convention`` (default: the release's UP 0.1.0 code, no "+1").

    Returns ``cfg``.
    """
    from detectron2.data.transforms import ResizeShortestEdge
    from omegaconf import OmegaConf

    from ..data.transforms import OpenCVResizeShortestEdge

    model = cfg.model
    model.size_divisibility = 64
    model.test_box_convention = "united_perception"
    model.test_nms_convention = nms_convention
    augmentations = OmegaConf.select(cfg, "dataloader.test.mapper.augmentations", default=None)
    for aug in augmentations or []:
        target = aug.get("_target_")
        # a class in a loaded .py config, its dotted name in a saved .yaml one
        if target is ResizeShortestEdge or (
            isinstance(target, str) and target.rsplit(".", 1)[-1] == "ResizeShortestEdge"
        ):
            aug._target_ = OpenCVResizeShortestEdge
    return cfg
