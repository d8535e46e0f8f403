"""``python -m efl_d2.data.mini_lvis``: build (or reuse) mini-LVIS from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .build import ensure_mini_lvis, generate_mini_lvis

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m efl_d2.data.mini_lvis``: build (or reuse) mini-LVIS and print a summary."""
    parser = argparse.ArgumentParser(
        prog="python -m efl_d2.data.mini_lvis",
        description="Generate mini-LVIS, a synthetic long-tailed dataset in the LVIS v1 format.",
    )
    parser.add_argument(
        "--root",
        default=os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
        help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train-images", type=int, default=600)
    parser.add_argument("--num-val-images", type=int, default=150)
    parser.add_argument("--num-categories", type=int, default=40)
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=(224, 320), metavar=("MIN", "MAX")
    )
    parser.add_argument("--max-images-per-category", type=int, default=None)
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if an identical build is present"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final paths")
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, flush=True)

    kwargs = {
        "seed": args.seed,
        "num_train_images": args.num_train_images,
        "num_val_images": args.num_val_images,
        "num_categories": args.num_categories,
        "image_size": tuple(args.image_size),
        "max_images_per_category": args.max_images_per_category,
        "progress": None if args.quiet else say,
    }
    try:
        if args.force:
            paths = generate_mini_lvis(args.root, **kwargs)
        else:
            paths = ensure_mini_lvis(args.root, **kwargs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.quiet:
        say(paths.json_train)
        say(paths.json_val)
    return 0
