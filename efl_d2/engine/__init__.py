"""Training engine: the LazyConfig train/eval loop behind tools/train_net.py and its hooks."""

from .decoupled import freeze_all_but
from .efl_stats_hook import EFLStatsHook
from .hooks import GradientClipHook
from .lazy_train import (
    RunFailed,
    apply_overrides_strict,
    check_results,
    do_test,
    do_train,
    format_lvis_ap,
    load_config,
    main,
    parse_args,
    preflight,
    setup,
)
from .preflight import ConfigCheckError, check_run
from .resume import MetricsHistoryHook, truncate_metrics_json

__all__ = [
    "ConfigCheckError",
    "EFLStatsHook",
    "GradientClipHook",
    "MetricsHistoryHook",
    "RunFailed",
    "apply_overrides_strict",
    "check_results",
    "check_run",
    "do_test",
    "do_train",
    "format_lvis_ap",
    "freeze_all_but",
    "load_config",
    "main",
    "parse_args",
    "preflight",
    "setup",
    "truncate_metrics_json",
]
