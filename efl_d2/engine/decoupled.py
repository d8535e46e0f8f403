"""The second stage of decoupled training (cRT, BAGS): a trained detector whose box classifier is
re-initialised and retrained while everything else stays as the first stage left it.

A config asks for it with ``train.retrain_only = ["roi_heads.box_predictor.cls_score"]`` (module
prefixes) and points ``train.init_checkpoint`` at the first stage's ``model_final.pth``;
``tools/train_net.py`` then freezes the rest (:func:`freeze_all_but`) and loads the checkpoint
without those modules (``EFLCheckpointer.reinitialize``), so they start from their constructor's
initialisation. A resumed second stage loads its own checkpoints whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from ..checkpoint.checkpointer import matches_prefix

__all__ = ["freeze_all_but", "matches_prefix"]

logger = logging.getLogger(__name__)


def freeze_all_but(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Stop training every parameter of ``model`` outside the module ``prefixes``; BatchNorm layers
    outside them become ``FrozenBatchNorm2d`` (their statistics stay the loaded ones).

    Returns:
        the names of the parameters that still train.

    Raises:
        ValueError: a prefix names no parameter (nothing, or not what was meant, would train).
    """
    prefixes = [p.removesuffix(".") for p in prefixes]
    names = [n for n, _ in model.named_parameters()]
    for p in prefixes:
        if not any(matches_prefix(n, [p]) for n in names):
            near = sorted(
                {n.rsplit(".", 1)[0] for n in names if n.split(".")[0] == p.split(".")[0]}
            )
            raise ValueError(
                f"train.retrain_only: {p!r} names no parameter of the model"
                + (f"; modules there: {near[:8]}" if near else "")
            )
    trainable, values = [], 0
    for name, param in model.named_parameters():
        keep = matches_prefix(name, prefixes)
        param.requires_grad_(keep)
        if keep:
            trainable.append(name)
            values += param.numel()
    _freeze_batchnorm(model, "", prefixes)
    logger.info(
        f"Decoupled training: {len(trainable)} parameter tensors train ({values} values); "
        "the rest is frozen"
    )
    return trainable


def _freeze_batchnorm(module: nn.Module, name: str, prefixes: Sequence[str]) -> None:
    for child_name, child in module.named_children():
        full = f"{name}.{child_name}" if name else child_name
        if matches_prefix(full, prefixes):
            continue
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, child_name, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
        else:
            _freeze_batchnorm(child, full, prefixes)
