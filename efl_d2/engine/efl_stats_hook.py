"""A training hook that commits and logs the per-class gradient statistics of EFL-like losses, and
says for how many classes EFL currently equals the focal loss."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from detectron2.engine import HookBase
from torch import nn

from ..losses import GradientStatistics, put_category_statistics
from ..losses.observability import FocalSaturation, focal_saturation

__all__ = ["SATURATION_NOTICE_SHARE", "EFLStatsHook"]

logger = logging.getLogger(__name__)

#: The share of classes with g_j = 1 (EFL equal to the focal loss) from which the hook warns, once:
#: "nearly all". At 90% EFL rebalances at most one class in ten; on LVIS, where rare and common
#: classes are two thirds of the vocabulary, that means most of them have saturated too.
SATURATION_NOTICE_SHARE = 0.9


class EFLStatsHook(HookBase):
    """Log g, gamma, ... of every :class:`GradientStatistics` module in the model.

    - ``after_backward`` commits the statistics of the step that just ran backward (an
      all-reduce when distributed; every rank runs it, after DDP's own reductions finished), so
      checkpoints written in ``after_step`` and the logged values include the last step.
    - Every ``period`` iterations (and at the last one) it puts, per loss module, the means over all
      classes and over the rare/common/frequent groups into the EventStorage, as
      ``efl/<name>_<group>`` (``efl/<module path>/<name>_<group>`` when the model has several).
    - At the same iterations, for every loss that equals the focal loss where g_j = 1 (EFL), once
      its statistics have been updated: the number of such classes as ``efl/focal_classes`` and
      ``efl/focal_classes_<group>``, and one log line saying it; the first time at least
      :data:`SATURATION_NOTICE_SHARE` of the classes are there, a one-time warning explains it.

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
        self._noticed: set[str] = set()  # modules whose saturation notice was given

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
            self._report_saturation(name, m, prefix)

    def _report_saturation(self, name: str, module: GradientStatistics, prefix: str) -> None:
        """Put and log the focal-saturation counts of one loss; warn once when nearly all saturate.

        Detectron2's console printer shows only losses, lr and timings, so the counts get their
        own log line next to the scalars in ``metrics.json``.
        """
        saturation = focal_saturation(module, self._class_frequencies)
        if saturation is None:  # not EFL-like, or no statistics yet: g = 1 means nothing
            return
        for key, value in saturation.scalars().items():
            self.trainer.storage.put_scalar(f"{prefix}/{key}", value, smoothing_hint=False)
        subject = "EFL" if len(self._modules) == 1 else f"EFL ({name})"
        logger.info(f"iter {self.trainer.iter}: {saturation.describe(subject)}")
        if saturation.share >= SATURATION_NOTICE_SHARE and name not in self._noticed:
            self._noticed.add(name)
            logger.warning(_saturation_notice(saturation, subject, prefix))


def _saturation_notice(saturation: FocalSaturation, subject: str, prefix: str) -> str:
    """The one-time explanation of a (nearly) fully saturated EFL."""
    keys = f"{prefix}/focal_classes"
    if saturation.groups:
        keys += f" and {prefix}/focal_classes_{{{','.join(saturation.groups)}}}"
    return (
        f"{subject} now equals the focal loss for {saturation.saturated} of {saturation.total} "
        f"classes (at least {SATURATION_NOTICE_SHARE:.0%}): their accumulated positive gradients "
        "are at least their negative ones (g_j clamped at 1), so EFL's rebalancing is inactive "
        "for them. In the first iterations this is usual (the classifier's low prior keeps the "
        "negative gradients small); if it lasts through training, EFL gives what the focal loss "
        "gives on this data: expected where the data is not long-tailed (mini-LVIS is such a "
        "case); on long-tailed data, check the training data and its class frequencies. The "
        f"counts are logged every log period as {keys} in metrics.json (next to {prefix}/g_*)."
    )
