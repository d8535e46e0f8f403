#!/usr/bin/env python
"""Score an LVIS results json (e.g. ``lvis_instances_results.json`` of an evaluation) offline.

    python tools/evaluate_lvis.py datasets/lvis/lvis_v1_val.json output/lvis_instances_results.json
    python tools/evaluate_lvis.py GT.json RESULTS.json --protocol fixed --workers 2 --json out.json

Box AP with the numbers of lvis-api (``efl_d2.evaluation.evaluate_lvis``): ``--protocol standard``
(LVIS: at most ``--max-dets-per-image`` detections per image), ``fixed`` (AP-fixed of Dave et al.
2021: the top ``--dets-per-category`` detections of each category over the dataset, no
per-image limit) or ``pooled`` (AP-pool: as fixed, one precision-recall curve per frequency
group). ``--image-ids`` restricts the evaluation to some images (their GT and detections).
Prints the metrics as a table; ``--json`` also writes them (atomically) as strict JSON, with null
for a metric that is undefined (lvis-api's -1, -100 in the table: e.g. APr without rare
categories) or not a number.

Exit status 2 on bad input, before any scoring and with nothing written, after an ``error:``
message on stderr: a missing or broken file, ``--image-ids`` not in the ground truth, or results
that cannot be scored (``efl_d2.evaluation.lvis_inputs.lvis_results_problems``: an empty list,
image or category ids not in the ground truth, NaN or infinite scores or box values, negative
box sizes), each kind listed with its count and first result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import NoReturn


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gt_json", help="LVIS-format ground truth json")
    p.add_argument("results_json", help="LVIS results json: [{image_id, category_id, bbox, score}]")
    p.add_argument("--protocol", choices=("standard", "fixed", "pooled"), default="standard")
    p.add_argument("--max-dets-per-image", type=int, default=300, help="standard protocol")
    p.add_argument("--dets-per-category", type=int, default=10000, help="fixed / pooled")
    p.add_argument("--workers", type=int, default=0, help="processes scoring category shards")
    p.add_argument("--image-ids", type=int, nargs="+", help="evaluate only these images")
    p.add_argument("--json", help="also write the metrics to this file")
    return p.parse_args(argv)


def strict_json_metrics(metrics: dict) -> dict:
    """``metrics`` with None (JSON null) for an undefined value: NaN or infinite, or negative
    (lvis-api's -1 for "no category / GT to average over", -100 in percent; a defined AP is
    >= 0)."""
    return {k: v if math.isfinite(v) and v >= 0 else None for k, v in metrics.items()}


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from detectron2.utils.logger import create_small_table, setup_logger

    import efl_d2  # noqa: F401  (warning filters)
    from efl_d2._atomic import atomic_write_text
    from efl_d2.data.datasets import DatasetFileError, read_json
    from efl_d2.evaluation import evaluate_lvis
    from efl_d2.evaluation.lvis_inputs import lvis_results_problems, read_lvis_results

    setup_logger(name="efl_d2")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        _fail(f"--json {args.json}: no such directory")
    try:
        for path in (args.gt_json, args.results_json):
            if not os.path.isfile(path):
                raise DatasetFileError(f"{path}: no such file")
        gt = read_json(args.gt_json)
        if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= gt.keys():
            raise DatasetFileError(
                f"{args.gt_json}: not an LVIS ground truth (a JSON object with images, "
                "annotations and categories)"
            )
        results = read_lvis_results(args.results_json)
        problems = lvis_results_problems(gt, results)
        if problems:
            _fail(
                f"{args.results_json}: cannot score it: {len(problems)} problem(s)\n"
                + "".join(f"  - {p}\n" for p in problems)
                + f"  Check that they are results on {args.gt_json}, correct or drop these "
                "results and run again; nothing was scored or written."
            )
        start = time.perf_counter()
        metrics = evaluate_lvis(
            gt,
            results,
            protocol=args.protocol,
            max_dets_per_image=args.max_dets_per_image,
            dets_per_category=args.dets_per_category,
            image_ids=args.image_ids,
            num_workers=args.workers,
        )
    except (DatasetFileError, ValueError) as e:
        _fail(str(e))
    except KeyError as e:
        _fail(f"{args.gt_json}: a record lacks the field {e}")
    print(create_small_table(metrics))
    print(
        f"({len(results['score'])} detections, {args.protocol} protocol, {time.perf_counter() - start:.1f} s)"
    )
    if args.json:
        text = json.dumps(strict_json_metrics(metrics), indent=2, allow_nan=False)
        atomic_write_text(args.json, text + "\n")
    return metrics


if __name__ == "__main__":
    main()
