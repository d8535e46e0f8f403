"""EFL's per-category gradient statistics (g_j, gamma_j, ...) read from a model's losses."""

from __future__ import annotations

import torch

__all__ = ["loss_category_statistics"]


def loss_category_statistics(model: torch.nn.Module) -> dict:
    """``{module name: {"g": (C,), "gamma": (C,), ...}}`` (numpy) of every loss in ``model``
    that keeps per-category gradient statistics (EFL, EQLv2&Focal); empty if none."""
    from ..losses import GradientStatistics

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, GradientStatistics):
            stats = module.category_statistics()
            out[name or "loss"] = {k: v.detach().double().cpu().numpy() for k, v in stats.items()}
    return out
