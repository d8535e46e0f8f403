"""Converted official EFL weights against a target model: adapting them to its anchor order and
loss, and listing what in the model would change what they compute.

Used by :class:`efl_d2.checkpoint.EFLCheckpointer` after :mod:`.conversion` converted the names.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from .architecture import OFFICIAL_PIXEL_MEAN, OFFICIAL_PIXEL_STD, OfficialLastLevelP6P7
from .conversion import EFL_BUFFERS

__all__ = ["adapt_to_model", "check_official_architecture"]


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
    stats = [f"cls_loss.{b}" for b in EFL_BUFFERS]
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
            "(use efl_d2.official.use_official_architecture)"
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
