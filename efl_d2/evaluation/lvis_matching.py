"""lvis-api's matching and accumulation (``evaluate_img``, ``accumulate``) for one category shard
of :class:`~efl_d2.evaluation.lvis_inputs.LVISArrays`, vectorized, with the same float64 results."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lvis_inputs import LVISArrays, rank_in_runs, segment_starts

__all__ = ["ShardResult", "lvis_params", "precision_recall", "score_shard"]


def lvis_params():
    """lvis-api's own ``Params`` (IoU/recall thresholds, area ranges), so the constants are its."""
    from lvis.eval import Params

    return Params(iou_type="bbox")


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
    pair_round = rank_in_runs(d_key[cand])[np.searchsorted(cand, d_pos)]
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
        starts = segment_starts(d)
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


def precision_recall(tps, fps, num_gt, rec_thrs) -> tuple:
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
class ShardResult:
    """The curves of categories ``cat_range``, or ("pooled") their matched detections."""

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


def score_shard(a: LVISArrays, cat_range: tuple, keep_detections: bool) -> ShardResult:
    """Match and accumulate categories [cat_range) of ``a`` (all of whose rows belong to them)."""
    params = lvis_params()
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
    out = ShardResult(cat_range=cat_range, precision=precision, recall=recall)
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
            p, r = precision_recall(
                tps[:, ds:de][:, by_score], fps[:, ds:de][:, by_score], num_gt, rec_thrs
            )
            precision[:, :, c, ai] = p
            recall[:, c, ai] = r
    return out
