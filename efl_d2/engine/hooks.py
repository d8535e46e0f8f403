"""Training hooks that detectron2's lazy training script lacks."""

import torch
from detectron2.engine import HookBase

__all__ = ["GradientClipHook"]


class GradientClipHook(HookBase):
    """Clip the global L2 norm of all gradients after backward (the paper's "stabilized settings":
    max norm 35). detectron2's own ``CLIP_TYPE: norm`` clips each parameter separately.

    Under AMP the gradients are unscaled first; ``GradScaler.step`` then knows they are, and still
    skips steps whose gradients are not finite. The pre-clipping norm is logged as ``grad_norm``.
    """

    def __init__(self, max_norm: float):
        if not max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = float(max_norm)

    def after_backward(self):
        optimizer = self.trainer.optimizer
        grad_scaler = getattr(self.trainer, "grad_scaler", None)
        if grad_scaler is not None:
            grad_scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        self.trainer.storage.put_scalar("grad_norm", float(norm), smoothing_hint=False)
