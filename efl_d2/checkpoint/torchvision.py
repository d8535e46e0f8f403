"""torchvision ResNet ImageNet weights -> detectron2 ResNet parameter names.

torchvision's ResNet (``torchvision.models.resnet*``) and detectron2's ``ResNet`` hold the same
tensors under different names:

======================================  ==============================================
torchvision                             detectron2 (``backbone.bottom_up.`` omitted)
======================================  ==============================================
``conv1.weight``                        ``stem.conv1.weight``
``bn1.{weight,bias,running_*}``         ``stem.conv1.norm.{...}``
``layer{i}.{b}.conv{j}.weight``         ``res{i+1}.{b}.conv{j}.weight``
``layer{i}.{b}.bn{j}.{...}``            ``res{i+1}.{b}.conv{j}.norm.{...}``
``layer{i}.{b}.downsample.0.weight``    ``res{i+1}.{b}.shortcut.weight``
``layer{i}.{b}.downsample.1.{...}``     ``res{i+1}.{b}.shortcut.norm.{...}``
``fc.*``                                dropped (ImageNet classifier)
``*.num_batches_tracked``               dropped (FrozenBatchNorm2d has no counter)
======================================  ==============================================

A model using these weights must be configured like torchvision's ResNet: RGB input, pixel mean
``[123.675, 116.28, 103.53]`` and std ``[58.395, 57.12, 57.375]``, ``stride_in_1x1=False``
(stride in the 3x3 conv) for Bottleneck ResNets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch

from ..official.architecture import OFFICIAL_PIXEL_MEAN, OFFICIAL_PIXEL_STD

__all__ = [
    "TORCHVISION_PIXEL_MEAN",
    "TORCHVISION_PIXEL_STD",
    "convert_torchvision_to_d2",
    "is_torchvision_resnet_state_dict",
    "torchvision_key_to_d2",
]

# ImageNet mean / std of torchvision's transforms, on the 0..255 scale, RGB order: the statistics
# the official EFL detector normalises with (one definition).
TORCHVISION_PIXEL_MEAN = OFFICIAL_PIXEL_MEAN
TORCHVISION_PIXEL_STD = OFFICIAL_PIXEL_STD

_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
_STEM = re.compile(r"^(conv1|bn1)\.(.+)$")


def torchvision_key_to_d2(key: str) -> str | None:
    """The detectron2 ResNet name of one torchvision ResNet key (no prefix), or None if the key
    has no detectron2 counterpart (classifier ``fc``, BN ``num_batches_tracked``).

    Raises:
        KeyError: for a key that is not part of a torchvision ResNet.
    """
    if key.endswith("num_batches_tracked") or key.startswith("fc."):
        return None
    m = _STEM.match(key)
    if m:
        module, leaf = m.groups()
        return f"stem.conv1.{leaf}" if module == "conv1" else f"stem.conv1.norm.{leaf}"
    m = _BLOCK.match(key)
    if m:
        stage, block, rest = m.groups()
        prefix = f"res{int(stage) + 1}.{block}."
        conv = re.match(r"^conv(\d)\.(.+)$", rest)
        if conv:
            return prefix + rest
        bn = re.match(r"^bn(\d)\.(.+)$", rest)
        if bn:
            return prefix + f"conv{bn.group(1)}.norm.{bn.group(2)}"
        ds = re.match(r"^downsample\.([01])\.(.+)$", rest)
        if ds:
            index, leaf = ds.groups()
            return prefix + ("shortcut." if index == "0" else "shortcut.norm.") + leaf
    raise KeyError(f"{key!r} is not a parameter name of a torchvision ResNet")


def is_torchvision_resnet_state_dict(state_dict: Mapping[str, object]) -> bool:
    """Whether ``state_dict`` looks like ``torchvision.models.resnet*().state_dict()`` (keys
    ``conv1.weight``, ``bn1.*`` and ``layer1.0.*``, nothing detectron2-named)."""
    keys = set(state_dict)
    return (
        "conv1.weight" in keys
        and "bn1.running_mean" in keys
        and any(k.startswith("layer1.0.") for k in keys)
        and not any(k.startswith(("stem.", "res2.", "backbone.", "module.")) for k in keys)
    )


def convert_torchvision_to_d2(
    state_dict: Mapping[str, object], prefix: str = "", *, as_numpy: bool = False
) -> dict:
    """Rename a torchvision ResNet state dict to detectron2's ResNet names.

    Args:
        state_dict: ``{name: tensor or ndarray}`` of a torchvision ResNet (e.g. the file
            ``resnet50-0676ba61.pth``). A leading ``module.`` is stripped.
        prefix: prepended to every output name, e.g. ``"backbone.bottom_up."`` for an FPN model;
            empty (the detectron2 model-zoo convention) to load with matching heuristics.
        as_numpy: return numpy arrays (for detectron2's ``.pkl`` model-zoo format) instead of
            tensors.

    Returns:
        ``{detectron2 name: tensor (or ndarray)}``, classifier and BN counters dropped.

    Raises:
        KeyError: if a key is not part of a torchvision ResNet (the message lists them).
    """
    out: dict = {}
    unknown = []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        try:
            new = torchvision_key_to_d2(key)
        except KeyError:
            unknown.append(key)
            continue
        if new is None:
            continue
        tensor = torch.as_tensor(np.asarray(value)) if isinstance(value, np.ndarray) else value
        tensor = tensor.detach().cpu().clone()
        out[prefix + new] = tensor.numpy() if as_numpy else tensor
    if unknown:
        raise KeyError(
            f"{len(unknown)} keys are not torchvision ResNet parameters: {unknown[:10]}"
            + (" ..." if len(unknown) > 10 else "")
        )
    if not out:
        raise KeyError("the state dict holds no torchvision ResNet parameters")
    return out
