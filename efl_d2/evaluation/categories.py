"""LVIS frequency groups, per-category AP and the per-category report: one definition of each.

- Groups: :data:`FREQUENCY_GROUPS` (``"r"``, ``"c"``, ``"f"``), their names and colours, and
  :func:`frequency_group` (LVIS v1 thresholds on a category's train image count).
- Categories: :func:`category_records` / :func:`category_frequencies` read LVIS category dicts in
  sorted-id order, which is the contiguous class index detectron2 uses.
- AP: :func:`per_category_ap` from an lvis-api style precision array, :func:`per_group_summary`.
- Report: :func:`write_per_category_report` (CSV + JSON, written atomically) and
  :func:`read_per_category_report`.

Only the standard library and numpy are imported: data tools (mini-LVIS) and the loss's logging
use this module too.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .._atomic import atomic_write

__all__ = [
    "COMMON_MAX_IMAGES",
    "FREQUENCY_COLORS",
    "FREQUENCY_GROUPS",
    "FREQUENCY_NAMES",
    "RARE_MAX_IMAGES",
    "REPORT_COLUMNS",
    "UNKNOWN_FREQUENCY",
    "VAL_INSTANCES_COLUMN",
    "category_frequencies",
    "category_records",
    "count_instances",
    "frequency_color",
    "frequency_group",
    "per_category_ap",
    "per_group_summary",
    "read_per_category_report",
    "write_per_category_report",
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

#: Columns of the per-category report, in order; :data:`VAL_INSTANCES_COLUMN` is appended when
#: val instance counts are given.
REPORT_COLUMNS = ("category_id", "name", "frequency", "image_count", "ap")
VAL_INSTANCES_COLUMN = "val_instance_count"


# ----------------------------------------------------------------------------- groups


def frequency_group(image_count: int) -> str:
    """LVIS v1 frequency group of a category seen in ``image_count`` train images.

    0 counts as rare (a category that lost its images in a subset is still "r"); negative
    counts are an error.
    """
    if image_count < 0:
        raise ValueError(f"image_count must be >= 0, got {image_count}")
    if image_count <= RARE_MAX_IMAGES:
        return "r"
    if image_count <= COMMON_MAX_IMAGES:
        return "c"
    return "f"


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
            a category has no ground truth (``LVISEval.eval["precision"]``).
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


# ----------------------------------------------------------------------------- report


def _atomic_write_text(path: str, text: str) -> None:
    # a reader never sees a half-written report
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _report_rows(rows: Iterable[dict], val_instance_counts: Mapping[int, int] | None) -> list:
    out = []
    for r in rows:
        row = {k: r[k] for k in REPORT_COLUMNS}
        row["ap"] = float(row["ap"])
        if val_instance_counts is not None:
            row[VAL_INSTANCES_COLUMN] = int(val_instance_counts.get(r["category_id"], 0))
        out.append(row)
    return out


def write_per_category_report(
    rows: Iterable[dict],
    output_dir: str,
    *,
    prefix: str = "per_category_ap",
    val_instance_counts: Mapping[int, int] | None = None,
) -> dict[str, str]:
    """Write ``{prefix}.csv`` and ``{prefix}.json`` under ``output_dir``, each atomically.

    Args:
        rows: e.g. :func:`per_category_ap`'s rows (the :data:`REPORT_COLUMNS` keys are used).
        val_instance_counts: optional ``{category id: val GT instances}``
            (:func:`count_instances`); adds the :data:`VAL_INSTANCES_COLUMN` column.

    NaN AP is an empty CSV cell and ``null`` in JSON; floats are written so that they read back
    exactly (:func:`read_per_category_report`).

    Returns:
        ``{"csv": path, "json": path}``.
    """
    table = _report_rows(rows, val_instance_counts)
    columns = list(REPORT_COLUMNS) + (
        [VAL_INSTANCES_COLUMN] if val_instance_counts is not None else []
    )
    os.makedirs(output_dir, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({**row, "ap": "" if math.isnan(row["ap"]) else repr(row["ap"])})
    paths = {ext: os.path.join(output_dir, f"{prefix}.{ext}") for ext in ("csv", "json")}
    _atomic_write_text(paths["csv"], buf.getvalue())
    json_rows = [{**row, "ap": None if math.isnan(row["ap"]) else row["ap"]} for row in table]
    _atomic_write_text(paths["json"], json.dumps(json_rows, indent=1) + "\n")
    return paths


def read_per_category_report(path: str) -> list[dict]:
    """The rows of a report written by :func:`write_per_category_report` (``.csv`` or
    ``.json``), typed as written: ids and counts int, AP float (NaN where undefined)."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
        return [{**r, "ap": float("nan") if r["ap"] is None else float(r["ap"])} for r in rows]
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    ints = ("category_id", "image_count", VAL_INSTANCES_COLUMN)
    return [
        {
            **r,
            **{k: int(r[k]) for k in ints if k in r},
            "ap": float(r["ap"]) if r["ap"] else float("nan"),
        }
        for r in rows
    ]
