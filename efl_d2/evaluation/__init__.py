"""LVIS evaluation: exact, sharded scoring (:mod:`.lvis_scoring`) and Detectron2's
``LVISEvaluator`` built on it (:mod:`.evaluator`)."""

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


def __getattr__(name):
    # the evaluator imports detectron2 and torch, which the scoring processes do without
    if name == "LVISEvaluator":
        from .evaluator import LVISEvaluator

        return LVISEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
