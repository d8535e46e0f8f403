"""Adds to Detectron2's metrics history because its checkpoints drop it (a resumed run would log
other smoothed values): what an exact resume needs beyond its checkpointables.

- :class:`MetricsHistoryHook`: the recent history of every logged scalar travels in the
  checkpoint, so the smoothed values that ``metrics.json`` and the console show after a resume (the
  median over the last 20 iterations) are those of the uninterrupted run.
- the final evaluation of a run resumed from its final checkpoint is logged at the uninterrupted
  run's iteration (``max_iter``), not one after it.
- :func:`truncate_metrics_json`: drops the lines that the interrupted run wrote after its last
  checkpoint; the resumed run writes them again.

(The data side of resuming is :class:`efl_d2.data.ResumableTrainLoader`.)
"""

from __future__ import annotations

import json
import logging
import os

from detectron2.engine import HookBase
from detectron2.utils.events import HistoryBuffer

__all__ = ["MetricsHistoryHook", "truncate_metrics_json"]

logger = logging.getLogger(__name__)


class MetricsHistoryHook(HookBase):
    """Saves the last ``length`` values of every scalar of the trainer's ``EventStorage`` with
    each checkpoint (through the trainer's state dict) and puts them back before a resumed run's
    first iteration."""

    def __init__(self, length: int = 100) -> None:
        self.length = int(length)
        self._restored: dict | None = None

    def state_dict(self) -> dict:
        storage = self.trainer.storage
        return {
            "history": {
                name: [[float(v), int(i)] for v, i in buf.values()[-self.length :]]
                for name, buf in storage.histories().items()
            },
            "smoothing_hints": dict(storage.smoothing_hints()),
        }

    def load_state_dict(self, state: dict) -> None:
        self._restored = state  # the storage exists only once training starts

    def before_train(self) -> None:
        if not self._restored:
            return
        storage = self.trainer.storage
        for name, values in self._restored["history"].items():
            buf = HistoryBuffer()
            for value, iteration in values:
                buf.update(value, iteration)
            storage._history[name] = buf  # EventStorage has no public way to seed its history
        storage._smoothing_hints.update(self._restored["smoothing_hints"])
        self._restored = None

    def after_train(self) -> None:
        # A run resumed from its final checkpoint (interrupted during the final evaluation) has
        # no iteration left: detectron2's loop still counts one past max_iter, and the final
        # evaluation's line would say max_iter + 1 where the uninterrupted run's says max_iter.
        # (Runs before the writer's and the evaluation's after_train: registered before them.)
        if self.trainer.iter > self.trainer.max_iter:
            self.trainer.iter = self.trainer.storage.iter = self.trainer.max_iter


def truncate_metrics_json(path: str, start_iter: int) -> int:
    """Cut ``metrics.json`` (one JSON object per line, each with ``"iteration"``) before its first
    line of iteration >= ``start_iter`` or its first unreadable line (a write cut short).

    Truncates in place, so a JSONWriter that already opened the file for appending keeps writing
    at its (new) end. Returns the number of lines removed.
    """
    if not os.path.isfile(path):
        return 0
    with open(path, "rb+") as f:
        lines = f.readlines()
        keep_bytes, kept = 0, 0
        for line in lines:
            try:
                if json.loads(line)["iteration"] >= start_iter:
                    break
            except (ValueError, KeyError, TypeError):
                break
            keep_bytes += len(line)
            kept += 1
        f.truncate(keep_bytes)
    removed = len(lines) - kept
    if removed:
        logger.info(f"{path}: removed {removed} line(s) written after iteration {start_iter - 1}.")
    return removed
