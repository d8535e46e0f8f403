"""LVIS evaluation: exact, sharded scoring (:mod:`.lvis_scoring`) and Detectron2's
``LVISEvaluator`` built on it (:mod:`.evaluator`)."""

from .evaluator import LVISEvaluator
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
    "PROTOCOLS",
    "LVISArrays",
    "LVISEvaluator",
    "LVISScores",
    "evaluate_lvis",
    "lvis_arrays",
    "metric_names",
    "score_lvis",
]
