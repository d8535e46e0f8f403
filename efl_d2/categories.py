"""LVIS categories, frequency groups and per-category AP: the one definition of each.

- Groups: :data:`FREQUENCY_GROUPS` (``"r"``, ``"c"``, ``"f"``), their names and colours, and
  :func:`frequency_group` (LVIS v1 thresholds on a category's train image count).
- Categories: :func:`category_records` / :func:`category_frequencies` read LVIS category dicts in
  sorted-id order, which is the contiguous class index detectron2 uses;
  :func:`category_image_counts` and :func:`frequency_order` rank the classes of dataset dicts.
- AP: :func:`per_category_ap` from an lvis-api style precision array, :func:`per_group_summary`.

Only the standard library and numpy are imported: data (the mini-LVIS generator), the losses'
logging, evaluation (also in its numpy-only scoring processes), analysis and tools all use it.
The per-category report files are evaluation output: :mod:`efl_d2.evaluation.per_category_report`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "COMMON_MAX_IMAGES",
    "FREQUENCY_COLORS",
    "FREQUENCY_GROUPS",
    "FREQUENCY_NAMES",
    "RARE_MAX_IMAGES",
    "UNKNOWN_FREQUENCY",
    "category_frequencies",
    "category_image_counts",
    "category_records",
    "check_frequency_thresholds",
    "count_instances",
    "frequency_color",
    "frequency_group",
    "frequency_order",
    "per_category_ap",
    "per_group_summary",
]

#: LVIS frequency groups, in LVIS's own order (``LVISEval.params.img_count_lbl``).
FREQUENCY_GROUPS = ("r", "c", "f")
#: Stands for a category whose group is not known (only where a caller allows it).
UNKNOWN_FREQUENCY = "?"
FREQUENCY_NAMES = {"r": "rare", "c": "common", "f": "frequent", UNKNOWN_FREQUENCY: "unknown"}
FREQUENCY_COLORS = {
    "r": "tab:red",
    "c": "tab:orange",
    "f": "tab:blue",
    UNKNOWN_FREQUENCY: "tab:gray",
}

#: LVIS v1 thresholds on the number of train images that contain a category: rare 1-10,
#: common 11-100, frequent > 100.
RARE_MAX_IMAGES = 10
COMMON_MAX_IMAGES = 100


# ----------------------------------------------------------------------------- groups


def frequency_group(
    image_count: int, thresholds: Sequence[int] = (RARE_MAX_IMAGES, COMMON_MAX_IMAGES)
) -> str:
    """Frequency group of a category seen in ``image_count`` train images.

    Args:
        thresholds: (rare max, common max) train images; LVIS v1's (10, 100) by default: rare
            1-10, common 11-100, frequent > 100.

    0 counts as rare (a category that lost its images in a subset is still "r"); negative
    counts are an error.
    """
    if image_count < 0:
        raise ValueError(f"image_count must be >= 0, got {image_count}")
    rare_max, common_max = thresholds
    if image_count <= rare_max:
        return "r"
    if image_count <= common_max:
        return "c"
    return "f"


def check_frequency_thresholds(thresholds) -> tuple[int, int] | str:
    """``thresholds`` as (rare max, common max) ints, or a sentence saying what is wrong with it
    (two whole numbers with 0 <= rare max < common max)."""
    try:
        values = [int(t) for t in thresholds]
        whole = all(float(t) == int(t) for t in thresholds) and len(values) == 2
    except (TypeError, ValueError):
        whole = False
    if not whole or not 0 <= values[0] < values[1]:
        return (
            f"frequency thresholds must be two whole numbers [rare max, common max] with "
            f"0 <= rare max < common max (train images per class; LVIS: [10, 100]), got "
            f"{thresholds!r}"
        )
    return values[0], values[1]


def frequency_color(letter: str) -> str:
    """Matplotlib colour of a group letter; the unknown colour for anything else."""
    return FREQUENCY_COLORS.get(letter, FREQUENCY_COLORS[UNKNOWN_FREQUENCY])


# ----------------------------------------------------------------------------- categories


def _as_list(categories: Mapping[int, dict] | Iterable[dict]) -> list[dict]:
    # lvis.LVIS keeps categories as {id: dict}; a json holds a list of dicts
    return list(categories.values()) if isinstance(categories, Mapping) else list(categories)


def category_records(
    categories: Mapping[int, dict] | Iterable[dict], *, allow_unknown: bool = False
) -> list[dict]:
    """Group, name and train image count of each LVIS category, in sorted-id order.

    Args:
        categories: LVIS category dicts (a list, or ``{id: dict}`` as ``lvis.LVIS.cats``).
        allow_unknown: give categories without an LVIS frequency the letter
            :data:`UNKNOWN_FREQUENCY` instead of raising.

    Returns:
        K dicts ``{"category_id", "name", "frequency", "image_count"}``; a missing name is the
        id as text, a missing image count 0.

    Raises:
        ValueError: a category has no ``frequency`` in :data:`FREQUENCY_GROUPS` (unless
            ``allow_unknown``); the message names the first such ids.
    """
    cats = sorted(_as_list(categories), key=lambda c: c["id"])
    missing = [c["id"] for c in cats if c.get("frequency") not in FREQUENCY_GROUPS]
    if missing and not allow_unknown:
        raise ValueError(
            f"{len(missing)} categories (ids {missing[:5]}{' ...' if len(missing) > 5 else ''}) "
            f"have no LVIS 'frequency' in {FREQUENCY_GROUPS}; use a LVIS-format json whose "
            "categories carry it"
        )
    return [
        {
            "category_id": c["id"],
            "name": c.get("name", str(c["id"])),
            "frequency": (
                c["frequency"] if c.get("frequency") in FREQUENCY_GROUPS else UNKNOWN_FREQUENCY
            ),
            "image_count": c.get("image_count", 0),
        }
        for c in cats
    ]


def category_frequencies(
    categories: Mapping[int, dict] | Iterable[dict], *, allow_unknown: bool = False
) -> list[str]:
    """(K,) frequency letter of each category in sorted-id order (see :func:`category_records`)."""
    return [r["frequency"] for r in category_records(categories, allow_unknown=allow_unknown)]


def count_instances(annotations: Iterable[dict]) -> dict[int, int]:
    """``{category id: number of annotations}`` of LVIS-format annotations (e.g. the val GT)."""
    return dict(Counter(a["category_id"] for a in annotations))


def category_image_counts(dataset_dicts: Iterable[dict], num_classes: int) -> np.ndarray:
    """(C,) int64: number of detectron2 dataset dicts (images) containing each contiguous class
    id, crowd boxes left out."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for record in dataset_dicts:
        present = {
            a["category_id"] for a in record.get("annotations", []) if not a.get("iscrowd", 0)
        }
        for c in present:
            counts[c] += 1
    return counts


def frequency_order(counts: Sequence[float]) -> np.ndarray:
    """(C,) class indices from the most to the least frequent by ``counts`` (C,); stable, so
    the lower index comes first on ties."""
    return np.argsort(-np.asarray(counts, dtype=np.float64), kind="stable")


# ----------------------------------------------------------------------------- AP


def per_category_ap(
    precision: np.ndarray,
    cat_ids: Sequence[int],
    categories: Mapping[int, dict] | Iterable[dict],
    *,
    area_index: int = 0,
) -> list[dict]:
    """AP of every category from an lvis-api style precision array.

    Args:
        precision: [T IoU thresholds, R recall thresholds, K categories, A area ranges], -1 where
            a category has no ground truth (``LVISEval.eval["precision"]``,
            ``efl_d2.evaluation.LVISScores.precision``).
        cat_ids: (K,) the dataset category id of each K index (``LVISEval.params.cat_ids``).
        categories: LVIS category dicts covering ``cat_ids`` (every one needs a frequency).
        area_index: the A index of area "all" (0 in lvis-api).

    Returns:
        K rows ``{"category_id", "name", "frequency", "image_count", "ap"}`` in ``cat_ids``
        order; ``ap`` in [0, 1] is the mean over T and R of the entries > -1, NaN when there
        are none. A category with ground truth has all T x R entries set, so the mean of ``ap``
        over a group is lvis-api's AP_r / AP_c / AP_f (up to summation order).
    """
    precision = np.asarray(precision)
    if precision.ndim != 4 or precision.shape[2] != len(cat_ids):
        raise ValueError(
            f"precision must be [T, R, K, A] with K = {len(cat_ids)} categories, "
            f"got shape {precision.shape}"
        )
    by_id = {r["category_id"]: r for r in category_records(categories)}
    unknown = [c for c in cat_ids if c not in by_id]
    if unknown:
        raise ValueError(f"category ids {unknown[:5]} are not among the categories given")
    rows = []
    for k, cid in enumerate(cat_ids):
        p = precision[:, :, k, area_index]
        valid = p > -1
        ap = float(p[valid].mean()) if valid.any() else float("nan")
        rows.append({**by_id[cid], "ap": ap})
    return rows


def per_group_summary(rows: Iterable[dict]) -> dict[str, dict]:
    """Mean AP per frequency group over the categories with ground truth (AP not NaN).

    Returns:
        ``{"r" | "c" | "f": {"ap": mean AP in [0, 1] or NaN, "num_categories": categories with
        ground truth}}``.
    """
    rows = list(rows)
    out = {}
    for g in FREQUENCY_GROUPS:
        aps = np.asarray(
            [r["ap"] for r in rows if r["frequency"] == g and not math.isnan(r["ap"])],
            dtype=np.float64,
        )
        out[g] = {
            "ap": float(aps.mean()) if len(aps) else float("nan"),
            "num_categories": len(aps),
        }
    return out
