"""LVIS ground truth and results as flat arrays, with the protocol's limits and the federated
filter applied (what ``LVISResults`` and ``LVISEval._prepare`` of lvis-api keep)."""

from __future__ import annotations

import dataclasses
import json
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PROTOCOLS",
    "LVISArrays",
    "lvis_arrays",
    "lvis_results_problems",
    "rank_in_runs",
    "read_lvis_results",
    "segment_starts",
    "top_k_per_key",
]

PROTOCOLS = ("standard", "fixed", "pooled")

# the per-row fields of the ground truth and of the detections (category_shard selects them)
_GT_FIELDS = ("gt_img", "gt_cat", "gt_box", "gt_area", "gt_ignore")
_DT_FIELDS = ("dt_img", "dt_cat", "dt_box", "dt_score", "dt_area")


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
        return dataclasses.replace(
            self,
            **{f: getattr(self, f)[g] for f in _GT_FIELDS},
            **{f: getattr(self, f)[d] for f in _DT_FIELDS},
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


def _describe_result(i: int, img, cat, box, score) -> str:
    return (
        f"results[{i}]: image_id {int(img[i])}, category_id {int(cat[i])}, "
        f"bbox {[float(v) for v in box[i]]}, score {float(score[i])}"
    )


def lvis_results_problems(gt, results) -> list[str]:
    """What makes LVIS ``results`` unscorable against the ground truth ``gt``: one line per kind
    of problem, with how many results have it and the first of them (its index in the results
    list, image_id, category_id, bbox, score); empty if there is none.

    Args:
        gt: LVIS-format ground truth: json path, dict or ``lvis.LVIS``.
        results: as :func:`read_lvis_results` returns them (a dict of arrays), or a list of
            result dicts.

    The kinds: an empty results list (lvis-api fails on it; there is nothing to score); an
    ``image_id`` that is not an image of ``gt`` (lvis-api asserts; images of ``gt`` left out of
    an evaluation by ``image_ids`` are fine); a ``category_id`` that is not a category of ``gt``
    (lvis-api drops such results without a word); a score that is NaN or infinite (it breaks the
    per-image limit and the ranking: all-NaN scores still give an AP, a wrong one); a bbox value
    that is NaN or infinite; a negative width or height. A negative size gives IoU 0 with every
    box (pycocotools' ``bbIou``) and an area ``w * h`` that is negative when one side is, which
    lies outside every area range, so lvis-api ignores the detection instead of counting it as a
    false positive. A zero width or height is legal: IoU 0 and area 0 (in the "all" and "small"
    ranges), a false positive like any other miss, as lvis-api and pycocotools score it.
    """
    data = _dataset_dict(gt)
    img, cat, box, score = _results_arrays(results)
    if len(score) == 0:
        return ["the results list is empty: there is no detection to score"]
    img_ids = np.unique(np.fromiter((im["id"] for im in data["images"]), np.int64))
    cat_ids = np.unique(np.fromiter((c["id"] for c in data["categories"]), np.int64))
    finite_box = np.isfinite(box).all(axis=1)
    kinds = (
        (
            ~np.isin(img, img_ids),
            f"an image_id that is not among the ground truth's {len(img_ids)} images",
        ),
        (
            ~np.isin(cat, cat_ids),
            f"a category_id that is not among the ground truth's {len(cat_ids)} categories",
        ),
        (~np.isfinite(score), "a score that is NaN or infinite"),
        (~finite_box, "a bbox value that is NaN or infinite"),
        (finite_box & (box[:, 2:] < 0).any(axis=1), "a negative bbox width or height"),
    )
    problems = []
    for bad, what in kinds:
        n = int(np.count_nonzero(bad))
        if n:
            first = _describe_result(int(np.argmax(bad)), img, cat, box, score)
            problems.append(f"{n} result(s) with {what}; the first: {first}")
    return problems


def segment_starts(keys: np.ndarray) -> np.ndarray:
    """Start positions of the runs of equal values in ``keys``."""
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else keys[:0]


def rank_in_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of every element within its run of equal keys (0 for the first of a run)."""
    starts = segment_starts(sorted_keys)
    n = len(sorted_keys)
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def top_k_per_key(keys: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` highest scores of every key; ties keep the earlier index
    (Python's stable ``sorted(..., reverse=True)`` as lvis-api uses)."""
    order = np.lexsort((np.arange(len(keys)), -score, keys))
    return np.sort(order[rank_in_runs(keys[order]) < k])


def _index_of(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Position of each id in the sorted ``table``, -1 where absent."""
    pos = np.searchsorted(table, ids)
    pos = np.minimum(pos, len(table) - 1)
    return np.where(table[pos] == ids, pos, -1)


def _pair_keys(images: dict, img_ids: np.ndarray, cat_ids: np.ndarray, field: str) -> np.ndarray:
    """Sorted keys ``img * K + cat`` of the (image, category) pairs that the image records'
    ``field`` (e.g. ``neg_category_ids``) lists."""
    keys = []
    for i, img_id in enumerate(img_ids.tolist()):
        c = _index_of(np.asarray(images[img_id].get(field, []), dtype=np.int64), cat_ids)
        keys.append(i * len(cat_ids) + c[c >= 0])
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)


def _gt_fields(anns: list, img_ids: np.ndarray, cat_ids: np.ndarray) -> dict:
    """The GT rows of the evaluated images and categories (:data:`_GT_FIELDS`)."""
    g_img = _index_of(
        np.fromiter((a["image_id"] for a in anns), np.int64, count=len(anns)), img_ids
    )
    g_cat = _index_of(
        np.fromiter((a["category_id"] for a in anns), np.int64, count=len(anns)), cat_ids
    )
    # lvis-api orders the GT of an image as the annotation list does: a stable sort by image keeps
    # that order
    g_order = np.flatnonzero((g_img >= 0) & (g_cat >= 0))
    g_order = g_order[np.argsort(g_img[g_order], kind="stable")]
    rows = g_order.tolist()
    return {
        "gt_img": g_img[g_order],
        "gt_cat": g_cat[g_order],
        "gt_box": np.array([anns[i]["bbox"] for i in rows], dtype=np.float64).reshape(-1, 4),
        "gt_area": np.array([anns[i]["area"] for i in rows], dtype=np.float64),
        "gt_ignore": np.array([bool(anns[i].get("ignore", 0)) for i in rows], dtype=bool),
    }


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
    gt_fields = _gt_fields(data["annotations"], img_ids, cat_ids)

    d_img_id, d_cat_id, d_box, d_score = _results_arrays(results)
    if len(d_img_id) and not np.isin(d_img_id, known).all():
        bad = np.setdiff1d(d_img_id, known)[:5].tolist()
        raise ValueError(f"results hold image ids that are not in the ground truth: {bad}.")
    if protocol != "standard":
        keep = top_k_per_key(d_cat_id, d_score, dets_per_category)
    elif max_dets_per_image >= 0:
        keep = top_k_per_key(d_img_id, d_score, max_dets_per_image)
    else:
        keep = np.arange(len(d_img_id))
    d_img, d_cat = _index_of(d_img_id[keep], img_ids), _index_of(d_cat_id[keep], cat_ids)
    # federated filter: only images where the category is verified present (GT) or absent (neg)
    gt_pairs = np.unique(gt_fields["gt_img"] * num_cats + gt_fields["gt_cat"])
    verified = np.union1d(gt_pairs, _pair_keys(all_imgs, img_ids, cat_ids, "neg_category_ids"))
    take = (d_img >= 0) & (d_cat >= 0)
    take[take] = np.isin(d_img[take] * num_cats + d_cat[take], verified)
    keep = keep[take]
    dt_box = d_box[keep]
    return LVISArrays(
        img_ids=img_ids,
        cat_ids=cat_ids,
        frequency=[c.get("frequency", "?") for c in cats],
        not_exhaustive=_pair_keys(all_imgs, img_ids, cat_ids, "not_exhaustive_category_ids"),
        **gt_fields,
        dt_img=d_img[take],
        dt_cat=d_cat[take],
        dt_box=dt_box,
        dt_score=d_score[keep],
        dt_area=dt_box[:, 2] * dt_box[:, 3],
    )
