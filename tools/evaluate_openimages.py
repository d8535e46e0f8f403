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
too (atomically). Exit status 2 on bad input, before any scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


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


def main(argv=None) -> dict:
    args = parse_args(argv)
    files = [args.boxes, args.labels, args.classes, args.predictions, args.hierarchy,
             args.instance_counts_boxes]  # fmt: skip
    missing = [f for f in files if f and not os.path.isfile(f)]
    if missing:
        print("error: missing file(s): " + ", ".join(missing), file=sys.stderr)
        raise SystemExit(2)
    from efl_d2._atomic import atomic_write
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
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.expand_detections:
        if hierarchy is None:
            print("error: --expand-detections needs --hierarchy", file=sys.stderr)
            raise SystemExit(2)
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
        atomic_write(args.json, lambda f: json.dump(out, f, indent=1), mode="w")
    return out


if __name__ == "__main__":
    main()
