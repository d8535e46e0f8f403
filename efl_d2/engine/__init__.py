"""Training engine: the LazyConfig train/eval loop behind tools/train_net.py and its hooks."""

from .cli import apply_overrides_strict, load_config, parse_args, prepare_config
from .decoupled import freeze_all_but
from .efl_stats_hook import EFLStatsHook
from .eval_protocol import set_eval_protocol
from .hooks import GradientClipHook
from .lazy_train import do_test, do_train, main, preflight, record_resumed_config, setup
from .preflight import ConfigCheckError, check_run
from .report import RunFailed, check_results, format_lvis_ap
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
    "prepare_config",
    "record_resumed_config",
    "set_eval_protocol",
    "setup",
    "truncate_metrics_json",
]
