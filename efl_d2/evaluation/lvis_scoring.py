"""Exact LVIS box scoring on arrays, sharded by category.

lvis-api's ``LVISEval`` (0.5.3) keeps Python state for every image x category pair (23.8M pairs on
LVIS v1 val) and matches detections to ground truth in a triple Python loop; at full scale that is
minutes of one core and tens of GiB. Its result, though, depends on much less:

- the per-category precision/recall curves are independent across categories, so categories can
  be scored in shards (in other processes) and concatenated;
- only (image, category) pairs that hold a detection or a ground-truth box contribute, and only
  detection/GT pairs with IoU >= 0.5 (the lowest threshold) can ever match.

This module reproduces every step of ``LVISResults`` + ``LVISEval.evaluate/accumulate`` on numpy
arrays with the same float64 operations in the same order, so the precision array -- and the
summary lvis-api computes from it -- are identical, not just close (the tests compare them
bit for bit). What it reproduces, in lvis-api's own terms:

- ``LVISResults``: at most ``max_dets_per_image`` detections per image (highest scores; ties keep
  the earlier result), detection area ``w * h``;
- ``_prepare``: a detection counts only in images where its category is annotated positive (has a
  GT box) or negative (``neg_category_ids``); GT ``ignore`` defaults to 0;
- ``evaluate_img``: per area range, GT outside it is ignored and sorted last; detections by
  descending score (stable); greedy matching per IoU threshold: a detection takes the unmatched GT
  with the highest IoU >= threshold, ties to the later GT, non-ignored GT before ignored GT; an
  unmatched detection is ignored when outside the area range or its category is
  ``not_exhaustive`` in that image;
- ``accumulate``: detections of a category concatenated by image id, stably sorted by score;
  cumulative TP/FP, interpolated precision at 101 recall thresholds.

Ties between equal scores are therefore broken exactly as lvis-api breaks them: by image id, then
by position in the results list.

The "fixed" and "pooled" protocols of Dave et al. (2021, "Evaluating Large-Vocabulary Object
Detectors: The Devil is in the Details") use the same matching with no per-image limit and the top
``dets_per_category`` detections of each category over the dataset; "pooled" then accumulates one
curve over all detections of a frequency group ("all", "r", "c", "f") at area "all", instead of
one per category.

The work is split by step: :mod:`.lvis_inputs` (``LVISResults`` and ``_prepare``: the arrays),
:mod:`.lvis_matching` (``evaluate_img`` and ``accumulate`` of one category shard) and this module
(the shards, in processes, and the summary).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from .lvis_inputs import PROTOCOLS, LVISArrays, lvis_arrays, read_lvis_results
from .lvis_matching import ShardResult, lvis_params, precision_recall, score_shard

__all__ = [
    "POOLS",
    "LVISScores",
    "combine_shards",
    "evaluate_lvis",
    "metric_names",
    "metrics_percent",
    "plan_shards",
    "score_lvis",
    "score_shards",
]

logger = logging.getLogger(__name__)

POOLS = ("all", "r", "c", "f")


@dataclass
class LVISScores:
    """Precision/recall of an LVIS evaluation in lvis-api's layout, and its summary.

    Attributes:
        precision: (T, R, K, A), -1 where a category has no GT in an area range ("pooled": K is
            the pools ``POOLS`` and A = 1).
        recall: (T, K, A).
        results: lvis-api's summary (fractions; -1 where undefined), e.g. ``{"AP": 0.25, ...}``.
    """

    protocol: str
    cat_ids: np.ndarray
    frequency: list
    precision: np.ndarray
    recall: np.ndarray
    results: OrderedDict

    def lvis_eval(self):
        """An ``lvis.LVISEval`` holding these curves, for lvis-api's ``print_results`` and
        ``_summarize`` (it has no image-level state: ``evaluate`` was never run)."""
        from lvis.eval import LVISEval

        ev = LVISEval.__new__(LVISEval)
        ev.logger = logger
        ev.params = lvis_params()
        ev.params.cat_ids = self.cat_ids.tolist()
        if self.protocol != "standard":
            ev.params.max_dets = -1
        ev.freq_groups = [
            [k for k, f in enumerate(self.frequency) if f == g] for g in ev.params.img_count_lbl
        ]
        ev.eval = {"params": ev.params, "precision": self.precision, "recall": self.recall}
        ev.results = OrderedDict(self.results)
        return ev


def _shard_bounds(cat_of_rows: np.ndarray, num_cats: int, num_shards: int) -> list:
    """Contiguous category ranges with about equal numbers of rows (detections + GT)."""
    counts = np.bincount(cat_of_rows, minlength=num_cats).astype(np.float64) + 1.0
    cuts = np.searchsorted(np.cumsum(counts), np.linspace(0, counts.sum(), num_shards + 1)[1:-1])
    edges = np.unique(np.r_[0, np.minimum(cuts + 1, num_cats), num_cats])
    return [(int(lo), int(hi)) for lo, hi in itertools.pairwise(edges) if hi > lo]


def _run_shard(args) -> ShardResult:
    arrays, cat_range, keep_detections = args
    return score_shard(arrays, cat_range, keep_detections)


def _pooled_curves(shards: list, frequency: list) -> tuple:
    """Dave et al.'s pooled accumulation: one curve per pool over the detections of all its
    categories, concatenated by (image, category) as their ``LVISPooledEval`` does."""
    rec_thrs = lvis_params().rec_thrs
    cat = np.concatenate([s.dt_cat for s in shards])
    img = np.concatenate([s.dt_img for s in shards])
    score = np.concatenate([s.dt_score for s in shards])
    tp = np.concatenate([s.dt_tp for s in shards], axis=1)
    fp = np.concatenate([s.dt_fp for s in shards], axis=1)
    num_gt = np.concatenate([s.num_gt for s in shards])
    freq = np.asarray(frequency)
    # shards hold detections by (category, image, descending score); theirs: (image, category)
    base = np.lexsort((np.arange(len(cat)), img))
    precision = -np.ones((tp.shape[0], len(rec_thrs), len(POOLS), 1))
    recall = -np.ones((tp.shape[0], len(POOLS), 1))
    for p, pool in enumerate(POOLS):
        in_pool = np.ones(len(freq), bool) if pool == "all" else freq == pool
        n = int(num_gt[in_pool].sum())
        if n == 0:
            continue
        sel = base[in_pool[cat[base]]]
        sel = sel[np.argsort(-score[sel], kind="mergesort")]
        precision[:, :, p, 0], recall[:, p, 0] = precision_recall(
            tp[:, sel], fp[:, sel], n, rec_thrs
        )
    return precision, recall


def _mean_valid(s: np.ndarray) -> float:
    """lvis-api's ``_summarize`` reduction: the mean of the defined entries, -1 if none."""
    return -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])


def plan_shards(arrays: LVISArrays, *, num_workers: int = 0, num_shards: int | None = None):
    """Contiguous category ranges to score separately (default: 4 per worker, and at most
    ~500k detections each)."""
    if num_shards is None:
        num_shards = max(1, 4 * num_workers, len(arrays.dt_score) // 500_000)
    rows = np.concatenate([arrays.dt_cat, arrays.gt_cat])
    return _shard_bounds(rows, len(arrays.cat_ids), num_shards)


def score_shards(arrays: LVISArrays, bounds: list, *, protocol: str, num_workers: int = 0):
    """Match and accumulate the category ranges ``bounds``, in ``num_workers`` processes."""
    pooled = protocol == "pooled"
    jobs = [(arrays.category_shard(lo, hi), (lo, hi), pooled) for lo, hi in bounds]
    if num_workers == 0 or len(jobs) < 2:
        return [_run_shard(job) for job in jobs]
    # spawn: a worker starts from a clean interpreter, not from a copy of this process (a forked
    # copy of a trainer's memory would count against every worker's peak); it imports efl_d2
    # without torch and detectron2 (NUMPY_ONLY_ENV; the workers are started within ``map``)
    from .. import NUMPY_ONLY_ENV

    ctx = multiprocessing.get_context("spawn")
    previous = os.environ.get(NUMPY_ONLY_ENV)
    with ProcessPoolExecutor(max_workers=min(num_workers, len(jobs)), mp_context=ctx) as ex:
        os.environ[NUMPY_ONLY_ENV] = "1"
        try:
            results = ex.map(_run_shard, jobs)
        finally:
            if previous is None:
                del os.environ[NUMPY_ONLY_ENV]
            else:
                os.environ[NUMPY_ONLY_ENV] = previous
        return list(results)


def combine_shards(arrays: LVISArrays, shards: list, *, protocol: str) -> LVISScores:
    """The curves and lvis-api's summary from the shard results of all categories."""
    shards = sorted(shards, key=lambda s: s.cat_range)
    if protocol == "pooled":
        precision, recall = _pooled_curves(shards, arrays.frequency)
        results = OrderedDict(
            (f"AP-pool-{p}" if p != "all" else "AP-pool", _mean_valid(precision[:, :, i, :]))
            for i, p in enumerate(POOLS)
        )
        return LVISScores(protocol, arrays.cat_ids, arrays.frequency, precision, recall, results)
    precision = np.concatenate([s.precision for s in shards], axis=2)
    recall = np.concatenate([s.recall for s in shards], axis=1)
    scores = LVISScores(
        protocol, arrays.cat_ids, arrays.frequency, precision, recall, OrderedDict()
    )
    ev = scores.lvis_eval()
    ev.summarize()  # lvis-api's own summary over the identical curves
    scores.results = OrderedDict(ev.results)
    return scores


def score_lvis(
    arrays: LVISArrays,
    *,
    protocol: str = "standard",
    num_workers: int = 0,
    num_shards: int | None = None,
) -> LVISScores:
    """Score :class:`LVISArrays` exactly as lvis-api would.

    Args:
        num_workers: processes scoring category shards in parallel (0: in this process). Memory
            per process falls with the number of shards; numbers do not depend on either.
        num_shards: category shards (default: see :func:`plan_shards`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    bounds = plan_shards(arrays, num_workers=num_workers, num_shards=num_shards)
    shards = score_shards(arrays, bounds, protocol=protocol, num_workers=num_workers)
    return combine_shards(arrays, shards, protocol=protocol)


#: the metrics detectron2's LVISEvaluator reports, in its order
STANDARD_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
POOLED_METRICS = ("AP-pool", "AP-pool-r", "AP-pool-c", "AP-pool-f")


def metric_names(protocol: str) -> tuple:
    """The metrics reported for ``protocol``."""
    return POOLED_METRICS if protocol == "pooled" else STANDARD_METRICS


def metrics_percent(scores: LVISScores) -> dict:
    """The reported metrics in percent, as detectron2's LVISEvaluator converts lvis-api's
    fractions (an undefined metric, -1 in lvis-api, stays -100 as there)."""
    return {m: float(scores.results[m] * 100) for m in metric_names(scores.protocol)}


def evaluate_lvis(
    gt_json, results, *, protocol: str = "standard", num_workers: int = 0, **limits
) -> dict:
    """LVIS box AP of ``results`` against ``gt_json``, identical to lvis-api's.

    Args:
        gt_json: LVIS-format ground truth: json path, dict or ``lvis.LVIS``.
        results: list of LVIS result dicts (``image_id``, ``category_id``, ``bbox`` XYWH,
            ``score``), a path to such a json, or a dict of those fields as arrays.
        protocol: "standard" (LVIS: ``max_dets_per_image`` per image), "fixed" (AP-fixed: the
            top ``dets_per_category`` per category over the dataset, no per-image limit) or
            "pooled" (AP-pool: as "fixed", one curve per frequency group).
        num_workers: processes scoring category shards (0: this process).
        limits: ``max_dets_per_image`` (300), ``dets_per_category`` (10000) and ``image_ids``
            (evaluate on these images only, their GT and detections; default all), as for
            :func:`~efl_d2.evaluation.lvis_inputs.lvis_arrays`.

    Returns:
        metrics in percent: ``AP AP50 AP75 APs APm APl APr APc APf`` ("standard", "fixed", as
        detectron2's ``LVISEvaluator``) or ``AP-pool AP-pool-r AP-pool-c AP-pool-f``.
    """
    if isinstance(results, (str, os.PathLike)):
        results = read_lvis_results(os.fspath(results))
    arrays = lvis_arrays(gt_json, results, protocol=protocol, **limits)
    if len(results["score"] if isinstance(results, dict) else results) == 0:  # as detectron2
        logger.warning("No predictions to evaluate.")
        return {m: float("nan") for m in metric_names(protocol)}
    return metrics_percent(score_lvis(arrays, protocol=protocol, num_workers=num_workers))
