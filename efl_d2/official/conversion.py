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
  prediction convs are permuted to the model's order
  (:func:`efl_d2.official.adapt_to_model`).
- **Box deltas.** The official coder uses weights (1, 1, 1, 1), centre = x1 + w/2 with the +1
  width convention, which equals detectron2's ``Box2BoxTransform((1, 1, 1, 1))`` on anchors with
  ``offset=0.5`` and sides k*stride, so ``box_subnet_pred`` is copied unchanged. A model with other
  weights or anchor offset is reported by
  :func:`efl_d2.official.check_official_architecture`.
- **P6/P7.** Official P6 = conv(lateral(C5)) and P7 = conv(P6) with no ReLU. detectron2's
  ``LastLevelP6P7`` computes neither; the official architecture
  (:func:`efl_d2.official.official_architecture`) does.

This module converts files only; :mod:`.target_model` adapts converted weights to a model and
checks the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "OFFICIAL_EFL_R50_URL",
    "convert_official_to_d2",
    "is_official_state_dict",
    "official_key_to_d2",
    "unwrap_official_checkpoint",
]

# Linked from the official benchmark table (EOD 0.1.0 docs; same file at United-Perception HEAD).
OFFICIAL_EFL_R50_URL = (
    "https://github.com/ModelTC/United-Perception/releases/download/0.1.0/"
    "efl_improved_baseline_r50.pth"
)

_OFFICIAL_ROOTS = ("backbone.", "neck.", "roi_head.", "post_process.")
EFL_BUFFERS = ("pos_grad", "neg_grad", "pos_neg")
CLS_LAYOUTS = ("anchor_major", "class_major")


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
    if cls_layout not in CLS_LAYOUTS:
        raise ValueError(f"cls_layout must be one of {CLS_LAYOUTS}, got {cls_layout!r}")
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
