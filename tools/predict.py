#!/usr/bin/env python
"""Detect objects in images with an efl_d2 model; save visualisations and a JSON of detections.

    python tools/predict.py --config-file mini_lvis/fcos_R18.py \
        --checkpoint output/model_final.pth --input path/to/images/ --output predictions/
    python tools/predict.py --config-file <config> --trained --input a.jpg b.jpg --output out/

``--config-file`` is a path relative to efl_d2's ``configs/`` (model-zoo style) or a config file;
``--checkpoint`` any file ``EFLCheckpointer`` reads (detectron2, official EFL release), ``--trained``
the model-zoo weights. Class names come from the config's test dataset (``--dataset`` to choose
another registered dataset). Output: ``<output>/<image name>.png`` (detections drawn with
detectron2's Visualizer, the threshold written on the picture: by default the rule of
``efl_d2.visualization.score_threshold``, score >= max(0.05, 0.5 x the image's top score), or a
fixed ``--vis-thresh``) and ``<output>/predictions.json`` (all detections >= ``--json-thresh``:
bbox [x, y, w, h] in pixels, score, category_id (0-based), category_name; and each image's
``vis_threshold``; images that could not be read are listed under ``failed`` and make the exit
status 1, after the others are done). ``predictions.json`` is written atomically. Trailing
``key=value`` arguments override config values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(inputs: list, max_images: int | None = None) -> list:
    """Image files of ``inputs`` (files and folders, folders not recursed), sorted per folder."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise SystemExit(f"--input {item!r} is neither an image file nor a folder")
    if not files:
        raise SystemExit(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {inputs}")
    return files[:max_images] if max_images else files


def main(argv: list | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="model-zoo config path or file")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="checkpoint path or URL")
    weights.add_argument("--trained", action="store_true", help="the model zoo's released weights")
    parser.add_argument("--input", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument(
        "--vis-thresh",
        type=float,
        default=None,
        help="fixed min score to draw (default: max(0.05, 0.5 x the image's top score))",
    )
    parser.add_argument("--json-thresh", type=float, default=0.0, help="min score in the JSON")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--dataset", help="registered dataset whose class names to use")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    # efl_d2 first: its warning filters then cover detectron2's imports
    from efl_d2 import model_zoo  # noqa: I001
    from efl_d2.checkpoint import atomic_write
    from efl_d2.visualization import draw_predictions
    from detectron2.config import LazyConfig
    from PIL import Image

    cfg = model_zoo.get_config(args.config_file, trained=args.trained)
    if args.opts:
        cfg = LazyConfig.apply_overrides(cfg, args.opts)
    checkpoint = cfg.train.init_checkpoint if args.trained else args.checkpoint
    model = model_zoo.build_model(cfg, weights=checkpoint, device=args.device, strict=True)
    predictor = model_zoo.LazyPredictor(cfg, model)
    try:
        metadata = model_zoo.metadata_from_config(cfg, fallback=args.dataset)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    if args.dataset:
        from detectron2.data import MetadataCatalog

        metadata = MetadataCatalog.get(args.dataset)
        if not hasattr(metadata, "thing_classes"):
            raise SystemExit(f"--dataset {args.dataset!r} has no class names (thing_classes)")
    class_names = list(metadata.thing_classes)
    num_classes = getattr(model, "num_classes", len(class_names))
    if num_classes != len(class_names):
        raise SystemExit(
            f"the model predicts {num_classes} classes but dataset {metadata.name!r} has "
            f"{len(class_names)} class names; pass --dataset with the training dataset's name"
        )

    os.makedirs(args.output, exist_ok=True)
    images = list_images(args.input, args.max_images)
    records, used = [], set()
    failed = []
    for path in images:
        try:
            image = predictor.read(path)
        except RuntimeError as e:  # unreadable file: report it, go on with the others
            print(f"warning: {e}", file=sys.stderr)
            failed.append({"file_name": os.path.abspath(path), "error": str(e)})
            continue
        instances = predictor(image)
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = stem, 1
        while name in used:  # same file name in two input folders
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        drawn, thresh, num_drawn = draw_predictions(
            predictor.to_rgb(image), instances, metadata, fixed_threshold=args.vis_thresh
        )
        vis_path = os.path.join(args.output, name + ".png")
        Image.fromarray(drawn).save(vis_path)
        keep = instances[instances.scores >= args.json_thresh]
        records.append(
            {
                "file_name": os.path.abspath(path),
                "visualization": os.path.abspath(vis_path),
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "vis_threshold": thresh,
                "instances": model_zoo.instances_to_records(keep, class_names),
            }
        )
        print(f"{path}: {len(keep)} detections ({num_drawn} drawn at score >= {thresh:.2f})")
    out = {
        "config": args.config_file,
        "checkpoint": checkpoint,
        "dataset": metadata.name,
        "class_names": class_names,
        "images": records,
        "failed": failed,
    }
    json_path = os.path.join(args.output, "predictions.json")
    atomic_write(json_path, lambda f: json.dump(out, f, indent=1), mode="w")
    print(f"wrote {len(records)} visualisations and {json_path}")
    if failed:
        raise SystemExit(
            f"error: {len(failed)} of {len(images)} images could not be read (listed under "
            f"'failed' in {json_path})"
        )
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
