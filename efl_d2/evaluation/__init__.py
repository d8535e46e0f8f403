"""LVIS and OpenImages evaluation.

- :mod:`.lvis_scoring`: exact, sharded LVIS box scoring (standard, AP-fixed, AP-pool; numpy and
  lvis-api only) of the arrays of :mod:`.lvis_inputs`, matched by :mod:`.lvis_matching`;
- :mod:`.evaluator`: Detectron2's ``LVISEvaluator`` scored by it (imported on first use: it needs
  detectron2 and torch, which the scoring processes do without);
- :mod:`.coco`: Detectron2's ``COCOEvaluator`` scored by pycocotools' own COCOeval, with AP per
  frequency group and the per-category report (imported on first use);
- :mod:`.by_format`: the evaluator of a dataset's format (LVIS or COCO), for users' own data;
- :mod:`.openimages`: the OpenImages Challenge 2019 metric (exact to the official evaluator), AP1-AP5
  and its ``OpenImagesEvaluator`` (imported on first use);
- :mod:`.per_category_report`: the per-category AP files the evaluator writes (standard library
  only); the rows and frequency groups themselves are :mod:`efl_d2.categories`'. Drawing lives in
  :mod:`.plots`, not imported here (it needs matplotlib).
"""

from .lvis_inputs import PROTOCOLS, LVISArrays, lvis_arrays
from .lvis_scoring import LVISScores, evaluate_lvis, metric_names, score_lvis
from .per_category_report import (
    REPORT_COLUMNS,
    VAL_INSTANCES_COLUMN,
    read_per_category_report,
    write_per_category_report,
)

__all__ = [
    "PROTOCOLS",
    "REPORT_COLUMNS",
    "VAL_INSTANCES_COLUMN",
    "COCOEvaluator",
    "LVISArrays",
    "LVISEvaluator",
    "LVISScores",
    "OpenImagesEvaluator",
    "evaluate_lvis",
    "evaluator_for_dataset",
    "lvis_arrays",
    "metric_names",
    "read_per_category_report",
    "score_lvis",
    "write_per_category_report",
]


def __getattr__(name):
    if name == "COCOEvaluator":
        from .coco import COCOEvaluator

        return COCOEvaluator
    if name == "evaluator_for_dataset":
        from .by_format import evaluator_for_dataset

        return evaluator_for_dataset
    if name == "LVISEvaluator":
        from .evaluator import LVISEvaluator

        return LVISEvaluator
    if name == "OpenImagesEvaluator":
        from .openimages import OpenImagesEvaluator

        return OpenImagesEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
