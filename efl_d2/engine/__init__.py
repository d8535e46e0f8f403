"""Training engine: the LazyConfig train/eval loop behind tools/train_net.py and its hooks."""

from .efl_stats_hook import EFLStatsHook
from .hooks import GradientClipHook
from .lazy_train import apply_overrides_strict, do_test, do_train, format_lvis_ap, main, setup

__all__ = [
    "EFLStatsHook",
    "GradientClipHook",
    "apply_overrides_strict",
    "do_test",
    "do_train",
    "format_lvis_ap",
    "main",
    "setup",
]
