"""Turn the per-class statistics of a loss into a few scalars for detectron2's EventStorage."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..categories import FREQUENCY_GROUPS
from .grad_stats import GradientStatistics

__all__ = ["put_category_statistics", "summarize_category_statistics"]


def summarize_category_statistics(
    module: GradientStatistics, class_frequencies: Sequence[str] | None = None
) -> dict[str, float]:
    """Means of every per-class statistic of ``module`` overall and per frequency group.

    Args:
        module: a loss carrying gradient statistics (e.g. :class:`EqualizedFocalLoss`).
        class_frequencies: optional length-C sequence of 'r' / 'c' / 'f' by class index (e.g.
            :func:`efl_d2.categories.category_frequencies` of the training categories).

    Returns:
        e.g. ``{"g_mean": .., "g_r": .., "g_c": .., "g_f": .., "gamma_mean": .., ...}``; a group
        without classes is left out.
    """
    groups = None
    if class_frequencies is not None:
        if len(class_frequencies) != module.num_classes:
            raise ValueError(
                f"class_frequencies has {len(class_frequencies)} entries but the loss has "
                f"{module.num_classes} classes"
            )
        groups = {
            g: torch.tensor([f == g for f in class_frequencies], dtype=torch.bool)
            for g in FREQUENCY_GROUPS
        }
    out: dict[str, float] = {}
    for name, values in module.category_statistics().items():
        values = values.detach().double().cpu()
        out[f"{name}_mean"] = values.mean().item()
        if groups is not None:
            for g, mask in groups.items():
                if mask.any():
                    out[f"{name}_{g}"] = values[mask].mean().item()
    return out


def put_category_statistics(
    module: GradientStatistics,
    class_frequencies: Sequence[str] | None = None,
    *,
    prefix: str = "efl",
    storage=None,
) -> dict[str, float]:
    """Put :func:`summarize_category_statistics` into ``storage`` (default: the current
    detectron2 EventStorage) as ``{prefix}/{name}``; returns the dict it logged."""
    if storage is None:
        from detectron2.utils.events import get_event_storage

        storage = get_event_storage()
    scalars = summarize_category_statistics(module, class_frequencies)
    for name, value in scalars.items():
        storage.put_scalar(f"{prefix}/{name}", value, smoothing_hint=False)
    return scalars
