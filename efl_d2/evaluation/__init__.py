"""LVIS and OpenImages evaluation.

- :mod:`.lvis_scoring`: exact, sharded LVIS box scoring (standard, AP-fixed, AP-pool; numpy and
  lvis-api only);
- :mod:`.evaluator`: Detectron2's ``LVISEvaluator`` scored by it (imported on first use: it needs
  detectron2 and torch, which the scoring processes do without);
- :mod:`.openimages`: the OpenImages Challenge 2019 metric (exact to the official evaluator), AP1-AP5
  and its ``OpenImagesEvaluator`` (imported on first use);
- :mod:`.categories`: frequency groups, per-category AP and the per-category report (standard
  library and numpy only). Drawing lives in :mod:`.plots`, not imported here (it needs
  matplotlib).
"""

from .categories import (
    COMMON_MAX_IMAGES,
    FREQUENCY_COLORS,
    FREQUENCY_GROUPS,
    FREQUENCY_NAMES,
    RARE_MAX_IMAGES,
    REPORT_COLUMNS,
    UNKNOWN_FREQUENCY,
    VAL_INSTANCES_COLUMN,
    category_frequencies,
    category_records,
    count_instances,
    frequency_color,
    frequency_group,
    per_category_ap,
    per_group_summary,
    read_per_category_report,
    write_per_category_report,
)
from .lvis_scoring import (
    PROTOCOLS,
    LVISArrays,
    LVISScores,
    evaluate_lvis,
    lvis_arrays,
    metric_names,
    score_lvis,
)

__all__ = [
    "COMMON_MAX_IMAGES",
    "FREQUENCY_COLORS",
    "FREQUENCY_GROUPS",
    "FREQUENCY_NAMES",
    "PROTOCOLS",
    "RARE_MAX_IMAGES",
    "REPORT_COLUMNS",
    "UNKNOWN_FREQUENCY",
    "VAL_INSTANCES_COLUMN",
    "LVISArrays",
    "LVISEvaluator",
    "LVISScores",
    "OpenImagesEvaluator",
    "category_frequencies",
    "category_records",
    "count_instances",
    "evaluate_lvis",
    "frequency_color",
    "frequency_group",
    "lvis_arrays",
    "metric_names",
    "per_category_ap",
    "per_group_summary",
    "read_per_category_report",
    "score_lvis",
    "write_per_category_report",
]


def __getattr__(name):
    if name == "LVISEvaluator":
        from .evaluator import LVISEvaluator

        return LVISEvaluator
    if name == "OpenImagesEvaluator":
        from .openimages import OpenImagesEvaluator

        return OpenImagesEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
