"""A training hook that commits and logs the per-class gradient statistics of EFL-like losses."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from detectron2.engine import HookBase
from torch import nn

from ..losses import GradientStatistics, put_category_statistics

__all__ = ["EFLStatsHook"]

logger = logging.getLogger(__name__)


class EFLStatsHook(HookBase):
    """Log g, gamma, ... of every :class:`GradientStatistics` module in the model.

    - ``after_backward`` commits the statistics of the step that just ran backward (an
      all-reduce when distributed; every rank runs it, after DDP's own reductions finished), so
      checkpoints written in ``after_step`` and the logged values include the last step.
    - Every ``period`` iterations (and at the last one) it puts, per loss module, the means over all
      classes and over the rare/common/frequent groups into the EventStorage, as
      ``efl/<name>_<group>`` (``efl/<module path>/<name>_<group>`` when the model has several).

    Usage in a trainer: ``trainer.register_hooks([EFLStatsHook(model, class_frequencies=freqs)])``
    with ``freqs`` e.g. from :func:`efl_d2.categories.category_frequencies`.
    """

    def __init__(
        self,
        model: nn.Module,
        class_frequencies: Sequence[str] | None = None,
        period: int = 20,
    ):
        """
        Args:
            model: the (possibly DDP-wrapped) model.
            class_frequencies: optional length-C list of 'r' / 'c' / 'f' (LVIS frequency groups).
            period: log every ``period`` iterations.
        """
        if period <= 0:
            raise ValueError(f"period must be positive, got {period}")
        self._modules = [
            (name, m) for name, m in model.named_modules() if isinstance(m, GradientStatistics)
        ]
        if not self._modules:
            logger.warning("EFLStatsHook: the model has no loss with gradient statistics.")
        self._class_frequencies = list(class_frequencies) if class_frequencies else None
        self._period = period

    def after_backward(self):
        for _, m in self._modules:
            m.commit_statistics()

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self._period != 0 and it != self.trainer.max_iter - 1:
            return
        for name, m in self._modules:
            prefix = "efl" if len(self._modules) == 1 else f"efl/{name}"
            put_category_statistics(
                m, self._class_frequencies, prefix=prefix, storage=self.trainer.storage
            )
