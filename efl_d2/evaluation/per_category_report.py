"""The per-category AP report that :class:`~efl_d2.evaluation.LVISEvaluator` writes next to its
results: ``<prefix>.csv`` and ``<prefix>.json``, one row per category (written atomically, read
back exactly). The rows come from :func:`efl_d2.categories.per_category_ap`.

Standard library only: tools and the mini-LVIS study read these files without torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping

from .._atomic import atomic_write_text

__all__ = [
    "REPORT_COLUMNS",
    "VAL_INSTANCES_COLUMN",
    "read_per_category_report",
    "write_per_category_report",
]

#: Columns of the report, in order (the keys of a ``per_category_ap`` row);
#: :data:`VAL_INSTANCES_COLUMN` is appended when val instance counts are given.
REPORT_COLUMNS = ("category_id", "name", "frequency", "image_count", "ap")
VAL_INSTANCES_COLUMN = "val_instance_count"


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
    """Write ``{prefix}.csv`` and ``{prefix}.json`` under ``output_dir``, each atomically (a
    reader never sees a half-written report).

    Args:
        rows: e.g. :func:`efl_d2.categories.per_category_ap`'s rows (the :data:`REPORT_COLUMNS`
            keys are used).
        val_instance_counts: optional ``{category id: val GT instances}``
            (:func:`efl_d2.categories.count_instances`); adds the :data:`VAL_INSTANCES_COLUMN`
            column.

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
    atomic_write_text(paths["csv"], buf.getvalue())
    json_rows = [{**row, "ap": None if math.isnan(row["ap"]) else row["ap"]} for row in table]
    atomic_write_text(paths["json"], json.dumps(json_rows, indent=1) + "\n")
    return paths


def read_per_category_report(path: str) -> list[dict]:
    """The rows of a report written by :func:`write_per_category_report` (``.csv`` or
    ``.json``), typed as written: ids and counts int, AP float in [0, 1] (NaN where undefined)."""
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
