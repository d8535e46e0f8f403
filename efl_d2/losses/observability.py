"""Turn the per-class statistics of a loss into a few scalars for detectron2's EventStorage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..categories import FREQUENCY_GROUPS, FREQUENCY_NAMES
from .grad_stats import GradientStatistics

__all__ = [
    "FocalSaturation",
    "focal_saturation",
    "put_category_statistics",
    "summarize_category_statistics",
]


def _group_masks(
    module: GradientStatistics, class_frequencies: Sequence[str] | None
) -> dict[str, torch.Tensor] | None:
    """{group: (C,) bool mask} for 'r' / 'c' / 'f', or None without class frequencies."""
    if class_frequencies is None:
        return None
    if len(class_frequencies) != module.num_classes:
        raise ValueError(
            f"class_frequencies has {len(class_frequencies)} entries but the loss has "
            f"{module.num_classes} classes"
        )
    return {
        g: torch.tensor([f == g for f in class_frequencies], dtype=torch.bool)
        for g in FREQUENCY_GROUPS
    }


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
    groups = _group_masks(module, class_frequencies)
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


@dataclass(frozen=True)
class FocalSaturation:
    """For how many classes an EFL-like loss currently equals the focal loss (g_j clamped at 1).

    Attributes:
        saturated: number of such classes.
        total: number of classes.
        groups: ``{"r": (saturated, classes), ...}`` for the frequency groups that have classes;
            empty without class frequencies.
    """

    saturated: int
    total: int
    groups: dict[str, tuple[int, int]]

    @property
    def share(self) -> float:
        """saturated / total."""
        return self.saturated / self.total

    def scalars(self) -> dict[str, int]:
        """``{"focal_classes": n, "focal_classes_r": n_r, ...}``: the counts for EventStorage."""
        out = {"focal_classes": self.saturated}
        out.update({f"focal_classes_{g}": n for g, (n, _) in self.groups.items()})
        return out

    def describe(self, subject: str = "EFL") -> str:
        """The log line, e.g. ``EFL equals the focal loss for 37 of 40 classes (g_j = 1): rare
        14/16, common 14/15, frequent 9/9`` (without class frequencies: up to the parenthesis)."""
        text = f"{subject} equals the focal loss for {self.saturated} of {self.total} classes"
        text += " (g_j = 1)"
        if self.groups:
            text += ": " + ", ".join(
                f"{FREQUENCY_NAMES[g]} {n}/{size}" for g, (n, size) in self.groups.items()
            )
        return text


def focal_saturation(
    module: GradientStatistics, class_frequencies: Sequence[str] | None = None
) -> FocalSaturation | None:
    """Count the classes for which ``module`` currently equals the focal loss.

    Returns None where the count means nothing: a loss for which g_j = 1 is not the focal loss
    (``module.focal_when_saturated`` False, e.g. EQLv2), or one whose statistics were never
    updated (g starts at 1 for every class).
    """
    if not module.focal_when_saturated or not module.has_statistics():
        return None
    mask = module.saturated_classes().detach().cpu()
    groups = _group_masks(module, class_frequencies) or {}
    return FocalSaturation(
        saturated=int(mask.sum()),
        total=module.num_classes,
        groups={g: (int(mask[m].sum()), int(m.sum())) for g, m in groups.items() if bool(m.any())},
    )
