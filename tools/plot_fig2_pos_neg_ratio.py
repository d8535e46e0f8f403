#!/usr/bin/env python
"""Paper Fig. 2: log ratio of positive to negative samples per category under ATSS assignment.

    python tools/plot_fig2_pos_neg_ratio.py --config-file <config.py> --output fig2.png
    # e.g. on mini-LVIS's training split, first 200 images
    python tools/plot_fig2_pos_neg_ratio.py --config-file mini_lvis/<atss config>.py \
        --max-images 200 --output fig2.png --json fig2.json

Runs the config's anchor generator and assigner (``model.anchor_matcher``, ATSS for efl_d2's
detectors) on the training annotations of ``dataloader.train.dataset`` (or ``--dataset``), with the
config's test-time resize and the backbone's padding. No model weights are involved. For each
category j: #positive = anchors assigned to a box of j, #negative = all other (non-ignored)
anchors, summed over images; plotted as log10(#pos / #neg), categories sorted by number of
training images, coloured by LVIS frequency group. ``--json`` also writes the numbers.
Trailing ``key=value`` arguments override config values
(an unknown key is an error, exit status 2); a ``configs/custom/`` config takes its data as
``custom.train_json=... custom.train_images=...`` (the class names come from that json).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list | None = None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="model-zoo config path or file")
    parser.add_argument("--dataset", help="registered dataset (default: the config's train set)")
    parser.add_argument("--max-images", type=int, default=None, help="first N images only")
    parser.add_argument("--output", default="fig2_pos_neg_ratio.png", help="PNG to write")
    parser.add_argument("--json", help="also write the per-category numbers here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    from efl_d2 import analysis, model_zoo
    from efl_d2.engine import ConfigCheckError, prepare_config

    try:  # strict overrides; a configs/custom/ config's data registered
        cfg = prepare_config(model_zoo.get_config(args.config_file), args.opts)
    except ConfigCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    data = analysis.fig2_data_from_config(cfg, args.dataset, args.max_images)
    drawn = analysis.plot_fig2(data, args.output)
    print(
        f"wrote {args.output}: {data.num_images} images, {len(drawn['x'])} of "
        f"{len(data.positives)} categories with positive samples"
    )
    if args.json:
        names = data.class_names or [str(i) for i in range(len(data.positives))]
        rows = [
            {
                "rank": rank,
                "category_id": int(c),
                "name": names[c],
                "frequency": data.frequency[c] if data.frequency else None,
                "image_count": int(data.image_counts[c]),
                "positives": int(data.positives[c]),
                "negatives": int(data.negatives[c]),
                "log10_ratio": float(data.log_ratio[c]) if data.positives[c] else None,
            }
            for rank, c in enumerate(data.order)
        ]
        with open(args.json, "w") as f:
            json.dump({"num_images": data.num_images, "categories": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return data, drawn


if __name__ == "__main__":
    main(sys.argv[1:])
