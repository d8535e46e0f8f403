#!/usr/bin/env python
"""Paper Fig. 4: mean predicted score of positive vs negative samples per category, for several
checkpoints side by side (focal loss vs EFL).

    python tools/plot_fig4_scores.py \
        --panel focal <focal config> output/focal/model_final.pth \
        --panel EFL <efl config> output/efl/model_final.pth \
        --max-images 100 --output fig4.png --json fig4.json

Each ``--panel LABEL CONFIG CHECKPOINT`` builds the config's model, loads the checkpoint and scores
the images of ``--dataset`` (default: the first config's test set, e.g. LVIS v1 val) at the
config's test-time resize. A sample is an anchor, labelled exactly as in a training step
(``model.label_anchors``); for category j the positive score is the mean of sigmoid(logit_j) over
the anchors assigned to j, the negative score the mean over all other anchors. Categories are
sorted by number of training images (the first config's training set), rare ones shaded.

A CHECKPOINT that is missing, a directory, unreadable or not a checkpoint is one ``error:`` line
on stderr and exit status 2, every panel's checked before any dataset is read or model built
(URLs are fetched when loaded); one that does not fit its config's model is an ``error:`` and
status 2 too, listing the keys that differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn


def _fail(message: str) -> NoReturn:
    """``error: <message>`` on stderr, exit status 2 (the SystemExit's text is the line too)."""
    print(f"error: {message}", file=sys.stderr)
    exit_ = SystemExit(f"error: {message}")
    exit_.code = 2
    raise exit_


def main(argv: list | None = None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--panel",
        nargs=3,
        action="append",
        required=True,
        metavar=("LABEL", "CONFIG", "CHECKPOINT"),
        help="one panel per checkpoint",
    )
    parser.add_argument(
        "--dataset", help="registered dataset to score (default: config's test set)"
    )
    parser.add_argument("--max-images", type=int, default=None, help="first N images only")
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", default="fig4_scores.png", help="PNG to write")
    parser.add_argument("--json", help="also write the per-category numbers here")
    args = parser.parse_args(argv)

    import numpy as np
    from detectron2.data import get_detection_dataset_dicts
    from omegaconf import OmegaConf

    from efl_d2 import analysis, model_zoo
    from efl_d2.categories import category_image_counts, frequency_order
    from efl_d2.checkpoint import (
        CheckpointMismatchError,
        CheckpointReadError,
        check_checkpoint_file,
    )
    from efl_d2.data import class_frequencies

    for label, _, checkpoint in args.panel:
        try:
            check_checkpoint_file(checkpoint)
        except CheckpointReadError as e:
            _fail(f"--panel {label}: {e}")

    first_cfg = model_zoo.get_config(args.panel[0][1])
    dataset = args.dataset
    if dataset is None:
        names = OmegaConf.select(first_cfg, "dataloader.test.dataset.names")
        dataset = names if isinstance(names, str) else names[0]
    dicts = get_detection_dataset_dicts(dataset, filter_empty=False)
    if args.max_images:
        dicts = dicts[: args.max_images]

    panels = {}
    for label, config, checkpoint in args.panel:
        cfg = model_zoo.get_config(config)
        try:
            model = model_zoo.build_model(cfg, weights=checkpoint, device=args.device, strict=True)
        except (CheckpointReadError, CheckpointMismatchError) as e:
            _fail(f"--panel {label}: {e}")
        analysis.check_class_count(dataset, int(model.num_classes))
        panels[label] = analysis.mean_scores_per_category(
            model, dicts, analysis.scoring_mapper_from_config(cfg)
        )
        print(f"{label}: scored {panels[label].num_images} images of {dataset}")
    num_classes = len(next(iter(panels.values())).pos_mean)

    train_names = OmegaConf.select(first_cfg, "dataloader.train.dataset.names")
    counts = category_image_counts(
        get_detection_dataset_dicts(train_names, filter_empty=True), num_classes
    )
    order = frequency_order(counts)
    frequency = class_frequencies(train_names, num_classes)
    drawn = analysis.plot_fig4(panels, order, args.output, frequency=frequency)
    print(f"wrote {args.output}")
    if args.json:
        out = {
            "dataset": dataset,
            "order": [int(c) for c in order],
            "train_image_counts": [int(c) for c in counts],
            "frequency": frequency,
            "panels": {
                label: {
                    "pos_mean": [None if np.isnan(v) else float(v) for v in d.pos_mean],
                    "neg_mean": [None if np.isnan(v) else float(v) for v in d.neg_mean],
                    "pos_count": [int(v) for v in d.pos_count],
                    "neg_count": [int(v) for v in d.neg_count],
                }
                for label, d in panels.items()
            },
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return panels, order, drawn


if __name__ == "__main__":
    main(sys.argv[1:])
