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
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PROTOCOLS",
    "LVISArrays",
    "LVISScores",
    "combine_shards",
    "evaluate_lvis",
    "lvis_arrays",
    "metric_names",
    "metrics_percent",
    "plan_shards",
    "read_lvis_results",
    "score_lvis",
    "score_shards",
    "top_k_per_key",
]

logger = logging.getLogger(__name__)

PROTOCOLS = ("standard", "fixed", "pooled")
POOLS = ("all", "r", "c", "f")


def _lvis_params():
    """lvis-api's own ``Params`` (IoU/recall thresholds, area ranges), so the constants are its."""
    from lvis.eval import Params

    return Params(iou_type="bbox")


@dataclass
class LVISArrays:
    """Ground truth and detections of one LVIS evaluation as flat arrays.

    Indices refer to ``img_ids`` (sorted evaluated image ids, length I) and ``cat_ids`` (sorted
    category ids, length K). Detections are those that take part (federated filter, per-image or
    per-category limits applied), in results-list order.

    Attributes:
        gt_img, gt_cat: (G,) int64 indices; gt_box: (G, 4) float64 XYWH; gt_area: (G,) float64;
        gt_ignore: (G,) bool.
        dt_img, dt_cat: (D,) int64 indices; dt_box: (D, 4); dt_score, dt_area: (D,) float64.
        not_exhaustive: sorted int64 keys ``img * K + cat`` of not-exhaustively annotated pairs.
        frequency: (K,) LVIS frequency letter per category.
    """

    img_ids: np.ndarray
    cat_ids: np.ndarray
    frequency: list
    gt_img: np.ndarray
    gt_cat: np.ndarray
    gt_box: np.ndarray
    gt_area: np.ndarray
    gt_ignore: np.ndarray
    dt_img: np.ndarray
    dt_cat: np.ndarray
    dt_box: np.ndarray
    dt_score: np.ndarray
    dt_area: np.ndarray
    not_exhaustive: np.ndarray

    def category_shard(self, cat_lo: int, cat_hi: int) -> LVISArrays:
        """The same evaluation restricted to categories [cat_lo, cat_hi) (indices kept global)."""
        g = (self.gt_cat >= cat_lo) & (self.gt_cat < cat_hi)
        d = (self.dt_cat >= cat_lo) & (self.dt_cat < cat_hi)
        return LVISArrays(
            img_ids=self.img_ids,
            cat_ids=self.cat_ids,
            frequency=self.frequency,
            gt_img=self.gt_img[g],
            gt_cat=self.gt_cat[g],
            gt_box=self.gt_box[g],
            gt_area=self.gt_area[g],
            gt_ignore=self.gt_ignore[g],
            dt_img=self.dt_img[d],
            dt_cat=self.dt_cat[d],
            dt_box=self.dt_box[d],
            dt_score=self.dt_score[d],
            dt_area=self.dt_area[d],
            not_exhaustive=self.not_exhaustive,
        )


def _dataset_dict(gt) -> dict:
    if isinstance(gt, dict):
        return gt
    if hasattr(gt, "dataset"):  # lvis.LVIS (e.g. detectron2's LVISEvaluator._lvis_api)
        return gt.dataset
    from ..data.datasets import read_json

    return read_json(os.fspath(gt))


def _results_arrays(results) -> tuple:
    """(image_id, category_id, bbox (D, 4) XYWH, score) arrays of LVIS results: a list of result
    dicts (a results json's content), or a dict of those four fields as arrays."""
    if isinstance(results, dict):
        box = np.asarray(results["bbox"], dtype=np.float64).reshape(-1, 4)
        return (
            np.asarray(results["image_id"], dtype=np.int64),
            np.asarray(results["category_id"], dtype=np.int64),
            box,
            np.asarray(results["score"], dtype=np.float64),
        )
    n = len(results)
    img = np.fromiter((r["image_id"] for r in results), np.int64, count=n)
    cat = np.fromiter((r["category_id"] for r in results), np.int64, count=n)
    score = np.fromiter((r["score"] for r in results), np.float64, count=n)
    box = np.fromiter((v for r in results for v in r["bbox"]), np.float64, count=4 * n)
    return img, cat, box.reshape(n, 4), score


def read_lvis_results(path: str) -> dict:
    """An LVIS results json as arrays (``{"image_id", "category_id", "bbox" (D, 4), "score"}``),
    without holding a Python dict per detection: 5.9M detections take ~0.2 GiB instead of ~3.5.

    Raises:
        efl_d2.data.datasets.DatasetFileError: not valid JSON, not a list, or a result without
            ``image_id``/``category_id``/``bbox``/``score``.
    """
    from ..data.datasets import DatasetFileError, read_json

    fields = {"image_id": array("q"), "category_id": array("q"), "score": array("d")}
    boxes = array("d")

    def take(obj: dict):
        if "score" not in obj or "bbox" not in obj:
            return obj
        for k, values in fields.items():
            values.append(obj[k])
        boxes.extend(obj["bbox"])
        return None

    try:
        with open(path, encoding="utf-8") as f:
            parsed = json.load(f, object_hook=take)
    except json.JSONDecodeError:
        read_json(path)  # raises the error that names file, line and column
        raise
    except (KeyError, TypeError) as e:
        raise DatasetFileError(f"{path}: a result lacks a field or has a wrong type ({e}).") from e
    if not isinstance(parsed, list):
        raise DatasetFileError(f"{path}: expected a list of results, got {type(parsed).__name__}.")
    bad = next((i for i, x in enumerate(parsed) if x is not None), None)
    if bad is not None:
        raise DatasetFileError(
            f"{path}: result {bad} is not a detection ({str(parsed[bad])[:80]})."
        )
    out = {
        k: np.frombuffer(v, dtype=np.int64 if v.typecode == "q" else np.float64)
        for k, v in fields.items()
    }
    if len(boxes) != 4 * len(out["score"]):
        raise DatasetFileError(f"{path}: every bbox must have 4 numbers.")
    out["bbox"] = np.frombuffer(boxes, dtype=np.float64).reshape(-1, 4)
    return out


def _segment_starts(keys: np.ndarray) -> np.ndarray:
    """Start positions of the runs of equal values in ``keys``."""
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys[:0]


def _rank_in_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of every element within its run of equal keys (0 for the first of a run)."""
    starts = _segment_starts(sorted_keys)
    n = len(sorted_keys)
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def top_k_per_key(keys: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` highest scores of every key; ties keep the earlier index
    (Python's stable ``sorted(..., reverse=True)`` as lvis-api uses)."""
    order = np.lexsort((np.arange(len(keys)), -score, keys))
    return np.sort(order[_rank_in_runs(keys[order]) < k])


def lvis_arrays(
    gt,
    results,
    *,
    protocol: str = "standard",
    max_dets_per_image: int = 300,
    dets_per_category: int = 10000,
    image_ids: Sequence[int] | None = None,
) -> LVISArrays:
    """Flatten an LVIS ground truth (json path, dict or ``lvis.LVIS``) and results (a list of
    result dicts, or a dict of their fields as arrays, see :func:`_results_arrays`) into
    :class:`LVISArrays`, applying the protocol's detection limits and the federated filter.

    Args:
        protocol: "standard" (``max_dets_per_image`` per image, as LVIS) or "fixed"/"pooled"
            (``dets_per_category`` per category over the dataset, no per-image limit).
        image_ids: evaluate only these images (GT and detections of other images are left out),
            as setting lvis-api's ``params.img_ids``; default all images of ``gt``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    data = _dataset_dict(gt)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_ids = np.array([c["id"] for c in cats], dtype=np.int64)
    frequency = [c.get("frequency", "?") for c in cats]
    all_imgs = {im["id"]: im for im in data["images"]}
    known = np.fromiter(all_imgs, np.int64, count=len(all_imgs))
    if image_ids is None:
        img_ids = np.unique(known)
    else:
        img_ids = np.unique(np.asarray(list(image_ids), dtype=np.int64))
        unknown = np.setdiff1d(img_ids, known)
        if len(unknown):
            raise ValueError(f"image_ids not in the ground truth: {unknown[:5].tolist()}.")
    num_cats = len(cat_ids)

    def index_of(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
        """Position of each id in the sorted ``table``, -1 where absent."""
        pos = np.searchsorted(table, ids)
        pos = np.minimum(pos, len(table) - 1)
        return np.where(table[pos] == ids, pos, -1)

    def pair_keys(field: str) -> np.ndarray:
        keys = []
        for i, img_id in enumerate(img_ids.tolist()):
            c = index_of(np.asarray(all_imgs[img_id].get(field, []), dtype=np.int64), cat_ids)
            keys.append(i * num_cats + c[c >= 0])
        return np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)

    anns = data["annotations"]
    g_img = index_of(np.fromiter((a["image_id"] for a in anns), np.int64, count=len(anns)), img_ids)
    g_cat = index_of(
        np.fromiter((a["category_id"] for a in anns), np.int64, count=len(anns)), cat_ids
    )
    g_keep = (g_img >= 0) & (g_cat >= 0)
    # lvis-api orders the GT of an image as the annotation list does; a stable sort by image keeps it
    g_order = np.flatnonzero(g_keep)
    g_order = g_order[np.argsort(g_img[g_order], kind="stable")]
    gt_box = np.array([anns[i]["bbox"] for i in g_order.tolist()], dtype=np.float64).reshape(-1, 4)
    gt_area = np.array([anns[i]["area"] for i in g_order.tolist()], dtype=np.float64)
    gt_ignore = np.array([bool(anns[i].get("ignore", 0)) for i in g_order.tolist()], dtype=bool)
    gt_img, gt_cat = g_img[g_order], g_cat[g_order]

    d_img_id, d_cat_id, d_box, d_score = _results_arrays(results)
    if len(d_img_id) and not np.isin(d_img_id, known).all():
        bad = np.setdiff1d(d_img_id, known)[:5].tolist()
        raise ValueError(f"results hold image ids that are not in the ground truth: {bad}.")
    if protocol == "standard":
        keep = (
            top_k_per_key(d_img_id, d_score, max_dets_per_image)
            if max_dets_per_image >= 0
            else np.arange(len(d_img_id))
        )
    else:
        keep = top_k_per_key(d_cat_id, d_score, dets_per_category)
    d_img, d_cat = index_of(d_img_id[keep], img_ids), index_of(d_cat_id[keep], cat_ids)
    # federated filter: only images where the category is verified present (GT) or absent (neg)
    verified = np.union1d(np.unique(gt_img * num_cats + gt_cat), pair_keys("neg_category_ids"))
    take = (d_img >= 0) & (d_cat >= 0)
    take[take] = np.isin(d_img[take] * num_cats + d_cat[take], verified)
    keep, d_img, d_cat = keep[take], d_img[take], d_cat[take]
    dt_box = d_box[keep]
    return LVISArrays(
        img_ids=img_ids,
        cat_ids=cat_ids,
        frequency=frequency,
        gt_img=gt_img,
        gt_cat=gt_cat,
        gt_box=gt_box,
        gt_area=gt_area,
        gt_ignore=gt_ignore,
        dt_img=d_img,
        dt_cat=d_cat,
        dt_box=dt_box,
        dt_score=d_score[keep],
        dt_area=dt_box[:, 2] * dt_box[:, 3],
        not_exhaustive=pair_keys("not_exhaustive_category_ids"),
    )


# ----------------------------------------------------------------------------- matching


def _box_iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of paired XYWH boxes (P, 4) x (P, 4) -> (P,), computed as pycocotools' ``bbIou``
    computes it (same float64 operations in the same order, so the same bits)."""
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = w * h
    union = dt[:, 2] * dt[:, 3] + gt[:, 2] * gt[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


@dataclass
class _Candidates:
    """Detection/GT pairs that can match (IoU >= the lowest threshold), ordered for matching.

    ``dt``, ``gt``, ``iou``: (P,) pair arrays, sorted by (round, detection, GT position). A round
    holds the r-th candidate detection (by descending score) of every (image, category) group, so
    the detections of one round never compete for the same GT and rounds run in order.
    """

    dt: np.ndarray
    gt: np.ndarray
    iou: np.ndarray
    round_bounds: np.ndarray  # (R + 1,) pair offsets of each round


def _candidates(a: LVISArrays, dt_order: np.ndarray, gt_order: np.ndarray, iou_min: float):
    """Pairs of detections (in ``dt_order``: by group, descending score) and GT (``gt_order``: by
    group, list order) of the same (image, category) group with IoU >= ``iou_min``."""
    num_imgs = len(a.img_ids)
    d_key = a.dt_cat[dt_order] * num_imgs + a.dt_img[dt_order]
    g_key = a.gt_cat[gt_order] * num_imgs + a.gt_img[gt_order]
    lo = np.searchsorted(g_key, d_key, side="left")
    n = np.searchsorted(g_key, d_key, side="right") - lo
    d_pos = np.repeat(np.arange(len(d_key)), n)
    g_pos = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())  # lo[d] + 0..n[d]-1
    iou = _box_iou(a.dt_box[dt_order[d_pos]], a.gt_box[gt_order[g_pos]])
    ok = iou >= iou_min
    d_pos, g_pos, iou = d_pos[ok], g_pos[ok], iou[ok]
    # round of a candidate detection = its rank among the candidate detections of its group
    cand = np.unique(d_pos)
    pair_round = _rank_in_runs(d_key[cand])[np.searchsorted(cand, d_pos)]
    order = np.lexsort((g_pos, d_pos, pair_round))
    pair_round = pair_round[order]
    bounds = np.searchsorted(pair_round, np.arange(pair_round.max() + 2 if len(order) else 1))
    return _Candidates(dt=d_pos[order], gt=g_pos[order], iou=iou[order], round_bounds=bounds)


def _match(cand: _Candidates, gt_ignore: np.ndarray, thrs: np.ndarray, num_dt: int) -> tuple:
    """lvis-api's greedy matching for one area range, all IoU thresholds at once.

    Args:
        gt_ignore: (G,) bool, GT ignored in this area range (by GT position).
    Returns:
        matched (T, D) bool, and matched_ignored (T, D) bool: the matched GT is an ignored one.
    """
    num_thrs = len(thrs)
    gt_taken = np.zeros((num_thrs, len(gt_ignore)), dtype=bool)
    matched = np.zeros((num_thrs, num_dt), dtype=bool)
    matched_ignored = np.zeros((num_thrs, num_dt), dtype=bool)
    for r in range(len(cand.round_bounds) - 1):
        sl = slice(cand.round_bounds[r], cand.round_bounds[r + 1])
        d, g, iou = cand.dt[sl], cand.gt[sl], cand.iou[sl]
        starts = _segment_starts(d)
        free = ~gt_taken[:, g] & (iou[None, :] >= thrs[:, None])  # (T, P)
        ig = gt_ignore[g][None, :]
        # the best free non-ignored GT; only where there is none, the best free ignored GT
        best_reg = np.maximum.reduceat(np.where(free & ~ig, iou, -1.0), starts, axis=1)
        best_ign = np.maximum.reduceat(np.where(free & ig, iou, -1.0), starts, axis=1)
        use_reg = best_reg >= 0
        best = np.where(use_reg, best_reg, best_ign)  # (T, S)
        seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(d)]))
        hit = free & (ig != use_reg[:, seg]) & (iou[None, :] == best[:, seg])
        # ties go to the later GT (lvis-api replaces its best match on >=)
        last = np.maximum.reduceat(np.where(hit, np.arange(len(d)), -1), starts, axis=1)
        t_idx, s_idx = np.nonzero(last >= 0)
        p = last[t_idx, s_idx]
        gt_taken[t_idx, g[p]] = True
        matched[t_idx, d[p]] = True
        matched_ignored[t_idx, d[p]] = gt_ignore[g[p]]
    return matched, matched_ignored


# ----------------------------------------------------------------------------- accumulation


def _precision_recall(tps, fps, num_gt, rec_thrs) -> tuple:
    """lvis-api's ``accumulate`` for one curve: tps/fps (T, D) in score order -> precision
    (T, R) and recall (T,)."""
    tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
    fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
    num_thrs, num_dt = tps.shape
    precision = np.zeros((num_thrs, len(rec_thrs)))
    recall = np.zeros(num_thrs)
    for t in range(num_thrs):
        tp, fp = tp_sum[t], fp_sum[t]
        rc = tp / num_gt
        if num_dt:
            recall[t] = rc[-1]
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # max precision to the right
        idx = np.searchsorted(rc, rec_thrs, side="left")
        ok = idx < num_dt
        precision[t, ok] = pr[idx[ok]]
    return precision, recall


@dataclass
class _ShardResult:
    cat_range: tuple
    precision: np.ndarray  # (T, R, k, A); all -1 for "pooled"
    recall: np.ndarray  # (T, k, A)
    # pooled protocol: per kept detection (area "all") and per category
    dt_score: np.ndarray | None = None
    dt_img: np.ndarray | None = None
    dt_cat: np.ndarray | None = None
    dt_tp: np.ndarray | None = None  # (T, D)
    dt_fp: np.ndarray | None = None
    num_gt: np.ndarray | None = None  # (k,)


def _score_shard(a: LVISArrays, cat_range: tuple, keep_detections: bool) -> _ShardResult:
    """Match and accumulate categories [cat_range) of ``a`` (all of whose rows belong to them)."""
    params = _lvis_params()
    thrs, rec_thrs = params.iou_thrs, params.rec_thrs
    areas = params.area_rng if not keep_detections else params.area_rng[:1]
    num_cats = len(a.cat_ids)
    lo, hi = cat_range
    # detections by (category, image, descending score, list position); GT by (category, image,
    # list position): lvis-api's order within an (image, category) pair and across images
    dt_order = np.lexsort((np.arange(len(a.dt_score)), -a.dt_score, a.dt_img, a.dt_cat))
    gt_order = np.lexsort((np.arange(len(a.gt_cat)), a.gt_img, a.gt_cat))
    cand = _candidates(a, dt_order, gt_order, float(thrs.min()))
    d_cat, d_img = a.dt_cat[dt_order], a.dt_img[dt_order]
    d_score, d_area = a.dt_score[dt_order], a.dt_area[dt_order]
    g_cat, g_area, g_ign = a.gt_cat[gt_order], a.gt_area[gt_order], a.gt_ignore[gt_order]
    not_exh = np.isin(d_img * num_cats + d_cat, a.not_exhaustive)
    d_bounds = np.searchsorted(d_cat, np.arange(lo, hi + 1))
    g_bounds = np.searchsorted(g_cat, np.arange(lo, hi + 1))

    k = hi - lo
    precision = -np.ones((len(thrs), len(rec_thrs), k, len(areas)))
    recall = -np.ones((len(thrs), k, len(areas)))
    out = _ShardResult(cat_range=cat_range, precision=precision, recall=recall)
    for ai, (a_lo, a_hi) in enumerate(areas):
        gt_ig = g_ign | (g_area < a_lo) | (g_area > a_hi)
        matched, matched_ig = _match(cand, gt_ig, thrs, len(dt_order))
        dt_ig = matched_ig | (~matched & ((d_area < a_lo) | (d_area > a_hi) | not_exh)[None, :])
        tps = matched & ~dt_ig
        fps = ~matched & ~dt_ig
        if keep_detections:  # "pooled": the curves are accumulated over pools, not here
            out.dt_score, out.dt_img, out.dt_cat = d_score, d_img, d_cat
            out.dt_tp, out.dt_fp = tps, fps
            out.num_gt = np.bincount(g_cat[~gt_ig] - lo, minlength=k)
            continue
        for c in range(k):
            ds, de = d_bounds[c], d_bounds[c + 1]
            num_gt = int(np.count_nonzero(~gt_ig[g_bounds[c] : g_bounds[c + 1]]))
            if num_gt == 0:  # no GT in this area range: lvis-api leaves -1
                continue
            by_score = np.argsort(-d_score[ds:de], kind="mergesort")
            p, r = _precision_recall(
                tps[:, ds:de][:, by_score], fps[:, ds:de][:, by_score], num_gt, rec_thrs
            )
            precision[:, :, c, ai] = p
            recall[:, c, ai] = r
    return out


# ----------------------------------------------------------------------------- the whole


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
        ev.params = _lvis_params()
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


def _run_shard(args) -> _ShardResult:
    arrays, cat_range, keep_detections = args
    return _score_shard(arrays, cat_range, keep_detections)


def _pooled_curves(shards: list, frequency: list) -> tuple:
    """Dave et al.'s pooled accumulation: one curve per pool over the detections of all its
    categories, concatenated by (image, category) as their ``LVISPooledEval`` does."""
    rec_thrs = _lvis_params().rec_thrs
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
        precision[:, :, p, 0], recall[:, p, 0] = _precision_recall(
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
    gt_json,
    results,
    *,
    protocol: str = "standard",
    max_dets_per_image: int = 300,
    dets_per_category: int = 10000,
    image_ids: Sequence[int] | None = None,
    num_workers: int = 0,
) -> dict:
    """LVIS box AP of ``results`` against ``gt_json``, identical to lvis-api's.

    Args:
        gt_json: LVIS-format ground truth: json path, dict or ``lvis.LVIS``.
        results: list of LVIS result dicts (``image_id``, ``category_id``, ``bbox`` XYWH,
            ``score``), a path to such a json, or a dict of those fields as arrays.
        protocol: "standard" (LVIS: ``max_dets_per_image`` per image), "fixed" (AP-fixed: the
            top ``dets_per_category`` per category over the dataset, no per-image limit) or
            "pooled" (AP-pool: as "fixed", one curve per frequency group).
        image_ids: evaluate on these images only (their GT and detections); default all.
        num_workers: processes scoring category shards (0: this process).

    Returns:
        metrics in percent: ``AP AP50 AP75 APs APm APl APr APc APf`` ("standard", "fixed", as
        detectron2's ``LVISEvaluator``) or ``AP-pool AP-pool-r AP-pool-c AP-pool-f``.
    """
    if isinstance(results, (str, os.PathLike)):
        results = read_lvis_results(os.fspath(results))
    arrays = lvis_arrays(
        gt_json,
        results,
        protocol=protocol,
        max_dets_per_image=max_dets_per_image,
        dets_per_category=dets_per_category,
        image_ids=image_ids,
    )
    if len(results["score"] if isinstance(results, dict) else results) == 0:  # as detectron2
        logger.warning("No predictions to evaluate.")
        return {m: float("nan") for m in metric_names(protocol)}
    return metrics_percent(score_lvis(arrays, protocol=protocol, num_workers=num_workers))
