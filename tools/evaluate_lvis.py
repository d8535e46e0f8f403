#!/usr/bin/env python
"""Score an LVIS results json (e.g. ``lvis_instances_results.json`` of an evaluation) offline.

    python tools/evaluate_lvis.py datasets/lvis/lvis_v1_val.json output/lvis_instances_results.json
    python tools/evaluate_lvis.py GT.json RESULTS.json --protocol fixed --workers 2 --json out.json

Box AP with the numbers of lvis-api (``efl_d2.evaluation.evaluate_lvis``): ``--protocol standard``
(LVIS: at most ``--max-dets-per-image`` detections per image), ``fixed`` (AP-fixed of Dave et al.
2021: the top ``--dets-per-category`` detections of each category over the dataset, no
per-image limit) or ``pooled`` (AP-pool: as fixed, one precision-recall curve per frequency
group). ``--image-ids`` restricts the evaluation to some images (their GT and detections).
Prints the metrics as a table; ``--json`` also writes them (atomically). Exit status 2 on bad
input (missing or broken file, unknown image ids), before any scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


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


def main(argv=None) -> dict:
    args = parse_args(argv)
    from detectron2.utils.logger import create_small_table, setup_logger

    import efl_d2  # noqa: F401  (warning filters)
    from efl_d2.checkpoint import atomic_write
    from efl_d2.data.datasets import DatasetFileError, read_json
    from efl_d2.evaluation import evaluate_lvis
    from efl_d2.evaluation.lvis_inputs import read_lvis_results

    setup_logger(name="efl_d2")
    try:
        for path in (args.gt_json, args.results_json):
            if not os.path.isfile(path):
                raise DatasetFileError(f"{path}: no such file")
        gt, results = read_json(args.gt_json), read_lvis_results(args.results_json)
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
    except (DatasetFileError, ValueError, KeyError) as e:
        print(f"evaluate_lvis: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    print(create_small_table(metrics))
    print(
        f"({len(results['score'])} detections, {args.protocol} protocol, {time.perf_counter() - start:.1f} s)"
    )
    if args.json:
        atomic_write(args.json, lambda f: json.dump(metrics, f, indent=2), mode="w")
    return metrics


if __name__ == "__main__":
    main()
