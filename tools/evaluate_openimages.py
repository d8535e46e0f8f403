#!/usr/bin/env python
"""Score an OpenImages predictions CSV with the Challenge 2019 detection metric, offline.

    python tools/evaluate_openimages.py \
        --boxes challenge-2019-validation-detection-bbox.csv \
        --labels challenge-2019-validation-detection-human-imagelabels.csv \
        --classes challenge-2019-classes-description-500.csv \
        --hierarchy challenge-2019-label500-hierarchy.json \
        --predictions predictions.csv [--instance-counts-boxes TRAIN_BOXES.csv] [--json out.json]

The ground truth (leaf-level, as released) is hierarchy-expanded when ``--hierarchy`` is given
(leave it out for files already expanded); the predictions (ImageID, LabelName, Score, XMin,
XMax, YMin, YMax, normalised) are scored as given, as the official evaluator does
(``--expand-detections`` copies each detection to its class's ancestors first). Prints mAP@0.5 and,
with ``--instance-counts-boxes`` (the training box CSV), AP1-AP5; ``--json`` writes per-class APs
too (atomically), as strict JSON: null where an AP is undefined (a class without ground truth, an
empty AP group).

Exit status 2 on bad input, before any scoring and with nothing written, after an ``error:``
message on stderr: a missing or broken file, an unknown class, or predictions that cannot be
scored (none at all, a NaN or infinite Score or coordinate; each kind listed with its count and
first row). Predictions of images without ground truth and degenerate boxes are not errors: the
official evaluator ignores them, and so does this one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import NoReturn

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boxes", required=True, help="ground-truth box CSV")
    p.add_argument("--labels", required=True, help="ground-truth image-level label CSV")
    p.add_argument("--classes", required=True, help="class descriptions CSV (no header)")
    p.add_argument("--predictions", required=True, help="predictions CSV")
    p.add_argument("--hierarchy", help="class hierarchy JSON: expand the ground truth")
    p.add_argument(
        "--expand-detections",
        action="store_true",
        help="copy each detection to its class's ancestors (a leaf-only detector; needs --hierarchy)",
    )
    p.add_argument("--instance-counts-boxes", help="training box CSV, for AP1-AP5")
    p.add_argument("--json", help="also write the metrics to this file")
    return p.parse_args(argv)


def prediction_problems(dets, mids) -> list[str]:
    """What makes ``dets`` (:func:`~efl_d2.evaluation.openimages.read_predictions`'s) unscorable:
    one line per kind (no prediction; a NaN or infinite Score; a NaN or infinite coordinate),
    with its count and first row. NaN scores make the ranking arbitrary; a NaN box is dropped as
    degenerate but an infinite one is not."""
    if len(dets.score) == 0:
        return ["no predictions: there is nothing to score"]
    kinds = (
        (~np.isfinite(dets.score), "a Score that is NaN or infinite"),
        (~np.isfinite(dets.boxes).all(axis=1), "an XMin/XMax/YMin/YMax that is NaN or infinite"),
    )
    problems = []
    for bad, what in kinds:
        n = int(np.count_nonzero(bad))
        if n:
            i = int(np.argmax(bad))
            y0, x0, y1, x1 = dets.boxes[i].tolist()
            first = (
                f"prediction {i} (line {i + 2}): ImageID {dets.image_ids[i]}, "
                f"LabelName {mids[dets.label[i]]}, Score {float(dets.score[i])}, "
                f"XMin {x0}, XMax {x1}, YMin {y0}, YMax {y1}"
            )
            problems.append(f"{n} prediction(s) with {what}; the first: {first}")
    return problems


def strict_json(value):
    """``value`` with None (JSON null) for every NaN or infinite float, in dicts too."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> dict:
    args = parse_args(argv)
    files = [args.boxes, args.labels, args.classes, args.predictions, args.hierarchy,
             args.instance_counts_boxes]  # fmt: skip
    missing = [f for f in files if f and not os.path.isfile(f)]
    if missing:
        _fail("missing file(s): " + ", ".join(missing))
    if args.expand_detections and not args.hierarchy:
        _fail("--expand-detections needs --hierarchy")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        _fail(f"--json {args.json}: no such directory")
    from efl_d2._atomic import atomic_write_text
    from efl_d2.data.openimages import (
        read_class_descriptions,
        read_hierarchy,
        training_instance_counts,
    )
    from efl_d2.evaluation.openimages import (
        expand_detections,
        ground_truth_from_files,
        group_aps,
        instance_count_groups,
        read_predictions,
        score_openimages,
    )

    try:
        mids, _ = read_class_descriptions(args.classes)
        hierarchy = read_hierarchy(args.hierarchy) if args.hierarchy else None
        gt = ground_truth_from_files(args.boxes, args.labels, mids, hierarchy)
        dets = read_predictions(args.predictions, mids)
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as e:
        _fail(str(e))
    problems = prediction_problems(dets, mids)
    if problems:
        _fail(
            f"{args.predictions}: cannot score it: {len(problems)} problem(s)\n"
            + "".join(f"  - {p}\n" for p in problems)
            + "  Correct or drop these predictions and run again; nothing was scored or written."
        )
    if args.expand_detections:
        dets = expand_detections(dets, hierarchy.index_lists(mids)[0])
    result = score_openimages(gt, dets)
    out = {"mAP": result["mAP"], "AP": {m: float(v) for m, v in zip(mids, result["AP"])}}
    if args.instance_counts_boxes:
        counts = training_instance_counts(args.instance_counts_boxes, mids, hierarchy)
        groups = instance_count_groups(counts)
        for k, v in enumerate(group_aps(result["AP"], groups)):
            out[f"AP{k + 1}"] = v
    print(f"images {len(gt.image_ids)}  detections {len(dets.label)}  classes {len(mids)}")
    print("  ".join(f"{k} {100 * out[k]:.2f}" for k in out if k != "AP"))
    if args.json:
        text = json.dumps(strict_json(out), indent=1, allow_nan=False)
        atomic_write_text(args.json, text + "\n")
    return out


if __name__ == "__main__":
    main()
