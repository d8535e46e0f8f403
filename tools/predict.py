#!/usr/bin/env python
"""Detect objects in images with an efl_d2 model; save visualisations and a JSON of detections.

    python tools/predict.py --config-file mini_lvis/fcos_R18.py \
        --checkpoint output/model_final.pth --input path/to/images/ --output predictions/
    python tools/predict.py --config-file <config> --trained --input a.jpg b.jpg --output out/
    python tools/predict.py --exported atss.onnx --input path/to/images/ --output predictions/

``--config-file`` is a path relative to efl_d2's ``configs/`` (model-zoo style) or a config file;
``--checkpoint`` any file ``EFLCheckpointer`` reads (detectron2, official EFL release) or a URL,
``--trained`` the model-zoo weights. Class names come from the config's test dataset
(``--dataset`` to choose another registered dataset). ``--exported`` takes instead a file of
``tools/export_model.py`` (ONNX, run with onnxruntime, or TorchScript, run with torch; told apart
by content) and no config: the file records the class names, the test-time resize and the input
format (``docs/export.md``), so ``--config-file``, ``--dataset`` and config overrides are refused
with it (argparse errors, exit status 2), as is a ``--device`` other than cpu; images are read,
resized and rescaled as with a checkpoint (``efl_d2.export.ExportedModel``). Output, the same for
all three: ``<output>/<image name>.png``
(detections drawn with detectron2's Visualizer, the threshold written on the picture: by default
the rule of ``efl_d2.visualization.score_threshold``, score >= max(0.05, 0.5 x the image's top
score), or a fixed ``--vis-thresh``) and ``<output>/predictions.json`` (all detections >=
``--json-thresh``: bbox [x, y, w, h] in pixels of the input image, score, category_id (0-based),
category_name; and each image's ``vis_threshold``; ``config``, ``checkpoint`` or ``exported``,
``dataset`` (null with ``--exported``) and ``class_names``; images that could not be read, or
that an exported model refuses (one too thin to keep a pixel at the test size), are listed under
``failed`` and make the exit status 1, after the others are done). ``predictions.json`` is
written atomically. Trailing ``key=value`` arguments override config values
(an unknown key is an error, exit status 2); a ``configs/custom/`` config takes its data as
``custom.train_json=... custom.train_images=...`` (the class names come from that json).

Memory follows the test size (the config's test-time resize), not the image's: each image is read
once as uint8 and resized before anything else (``efl_d2.model_zoo.LazyPredictor``). A picture
is drawn at the image's size unless the model saw the image shrunk more than
``DRAW_FACTOR`` (2) times, e.g. a 6000x6000 photo at a test size of 800: then it is drawn on a
copy ``DRAW_FACTOR`` times the test size (1600x1600), boxes scaled to it; its PNG is that size,
while ``predictions.json`` stays in the input image's pixels.

Image modes (``efl_d2.data.image_io.read_image``, the reader of training and evaluation too):
8-bit images (greyscale, palette, RGB, RGBA, CMYK, ...) are read as detectron2 reads them; 16-bit
greyscale (PIL modes "I;16*", and "I" with values in 0..65535) is mapped to 8 bits as
``round(v * 255 / 65535)``, the full 16-bit range onto 0..255 (PIL's own conversion would clip it
to white); 32-bit float ("F") and "I" images with other values are refused, like unreadable files
(listed under ``failed``, with a message naming the mode: convert them to 8-bit first).

Errors are an ``error:`` line on stderr and a non-zero exit status. Status 2: a ``--checkpoint``
that is missing, a directory, unreadable or not a checkpoint (one line naming it, checked before
anything is built; URLs are fetched when loaded), an unknown config, or weights that do not fit
the model (the line is followed by the keys that differ); an ``--exported`` file that is missing,
a directory, unreadable, neither ONNX nor TorchScript (a ``torch.save`` checkpoint is named as
one) or not written by efl_d2's export (one line naming it, before any image is read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DRAW_FACTOR = 2.0  # pictures are drawn at most this many times the size the model saw


def _fail(message: str) -> NoReturn:
    """``error: <message>`` on stderr, exit status 2 (the SystemExit's text is the line too)."""
    print(f"error: {message}", file=sys.stderr)
    exit_ = SystemExit(f"error: {message}")
    exit_.code = 2
    raise exit_


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
            raise SystemExit(f"error: --input {item!r} is neither an image file nor a folder")
    if not files:
        raise SystemExit(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {inputs}")
    return files[:max_images] if max_images else files


def drawing_size(height: int, width: int, test_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) to draw an image of ``height`` x ``width`` at: its own size, unless the
    model saw it (at ``test_size``) shrunk more than ``DRAW_FACTOR`` times; then ``DRAW_FACTOR``
    times the test size, with the image's aspect ratio."""
    scale = DRAW_FACTOR * max(test_size[0] / height, test_size[1] / width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescaled(instances, size: tuple[int, int]):
    """A copy of ``instances`` with its boxes in the pixels of its image resized to ``size``."""
    from detectron2.structures import Instances

    height, width = instances.image_size
    out = Instances(size, **instances.get_fields())
    boxes = instances.pred_boxes.clone()
    boxes.scale(size[1] / width, size[0] / height)
    out.pred_boxes = boxes
    return out


def parse_args(argv: list | None = None) -> argparse.Namespace:
    """The command line; options that do not go together are argparse errors (usage, status 2)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        help="model-zoo config path or file (required with --checkpoint / --trained; "
        "not with --exported)",
    )
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="checkpoint path or URL")
    weights.add_argument("--trained", action="store_true", help="the model zoo's released weights")
    weights.add_argument(
        "--exported",
        metavar="FILE",
        help="an ONNX or TorchScript file of tools/export_model.py (no config: the file records "
        "class names, test size and input format)",
    )
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
    if not args.exported and not args.config_file:
        parser.error(
            "--config-file is required with --checkpoint and --trained (only an --exported file "
            "records its own class names and test size)"
        )
    if args.exported:
        # Refused rather than ignored: each would change the predictions with a checkpoint, so
        # ignoring it would silently predict otherwise than asked.
        given = [
            option
            for option, value in (
                ("--config-file", args.config_file),
                ("--dataset", args.dataset),
                ("config overrides (key=value)", args.opts),
            )
            if value
        ]
        if given:
            parser.error(
                f"{' and '.join(given)} cannot be used with --exported: the file records its "
                "class names, test-time resize and input format"
            )
        if args.device not in (None, "cpu"):
            parser.error("--exported files run on the CPU: leave out --device or pass cpu")
    return args


def load_checkpoint_model(args) -> tuple:
    """(predictor, metadata with ``thing_classes``, image files, checkpoint) for
    ``--checkpoint`` / ``--trained``: files checked before anything is built (status 2)."""
    # efl_d2 first: its warning filters then cover detectron2's imports
    from efl_d2 import model_zoo
    from efl_d2.checkpoint import (
        CheckpointMismatchError,
        CheckpointReadError,
        check_checkpoint_file,
    )
    from efl_d2.engine import ConfigCheckError, prepare_config

    # everything that can be checked without building anything, first
    try:
        if args.checkpoint:
            check_checkpoint_file(args.checkpoint)
        model_zoo.get_config_file(args.config_file)
        if args.trained:
            model_zoo.get_checkpoint_entry(args.config_file)
    except (CheckpointReadError, RuntimeError) as e:
        _fail(str(e))
    images = list_images(args.input, args.max_images)

    try:  # strict overrides; a configs/custom/ config's data registered (its class names)
        cfg = prepare_config(
            model_zoo.get_config(args.config_file, trained=args.trained), args.opts
        )
    except ConfigCheckError as e:
        _fail(str(e))
    checkpoint = cfg.train.init_checkpoint if args.trained else args.checkpoint
    try:
        model = model_zoo.build_model(cfg, weights=checkpoint, device=args.device, strict=True)
    except (CheckpointReadError, CheckpointMismatchError) as e:
        _fail(str(e))
    predictor = model_zoo.LazyPredictor(cfg, model)
    try:
        metadata = model_zoo.metadata_from_config(cfg, fallback=args.dataset)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    if args.dataset:
        from detectron2.data import MetadataCatalog

        metadata = MetadataCatalog.get(args.dataset)
        if not hasattr(metadata, "thing_classes"):
            raise SystemExit(
                f"error: --dataset {args.dataset!r} has no class names (thing_classes)"
            )
    num_classes = getattr(model, "num_classes", len(metadata.thing_classes))
    if num_classes != len(metadata.thing_classes):
        raise SystemExit(
            f"error: the model predicts {num_classes} classes but dataset {metadata.name!r} has "
            f"{len(metadata.thing_classes)} class names; pass --dataset with the training "
            "dataset's name"
        )
    return predictor, metadata, images, checkpoint


def load_exported_model(args) -> tuple:
    """(predictor, metadata with ``thing_classes``, image files) for ``--exported``: an
    ``efl_d2.export.ExportedModel``, which reads, resizes and rescales as ``LazyPredictor`` does,
    with the file's class names. A file it cannot run is one error line, status 2, before any
    image is listed."""
    import torch

    import efl_d2  # noqa: F401  (its warning filters, before detectron2's imports)
    from efl_d2.export import ExportedFileError, ExportedModel

    try:  # onnxruntime with torch's thread count, so OMP_NUM_THREADS holds for both formats
        predictor = ExportedModel(args.exported, num_threads=torch.get_num_threads())
    except (ExportedFileError, ImportError) as e:
        _fail(str(e))
    images = list_images(args.input, args.max_images)
    metadata = predictor.metadata.detectron2_metadata(os.path.basename(args.exported))
    return predictor, metadata, images


def main(argv: list | None = None) -> dict:
    args = parse_args(argv)
    if args.exported:
        predictor, metadata, images = load_exported_model(args)
        checkpoint = None
    else:
        predictor, metadata, images, checkpoint = load_checkpoint_model(args)
    from PIL import Image

    from efl_d2 import model_zoo
    from efl_d2.checkpoint import atomic_write
    from efl_d2.export import InvalidImageError
    from efl_d2.visualization import draw_predictions

    class_names = list(metadata.thing_classes)

    def predict_one(path: str, image, name: str) -> dict:
        """Detections of one image and its picture."""
        instances = predictor(image)
        height, width = image.shape[:2]
        size = drawing_size(height, width, predictor.test_size)
        shown = instances if size == (height, width) else rescaled(instances, size)
        drawn, thresh, num_drawn = draw_predictions(
            predictor.to_rgb(image, size), shown, metadata, fixed_threshold=args.vis_thresh
        )
        vis_path = os.path.join(args.output, name + ".png")
        Image.fromarray(drawn).save(vis_path)
        keep = instances[instances.scores >= args.json_thresh]
        print(f"{path}: {len(keep)} detections ({num_drawn} drawn at score >= {thresh:.2f})")
        return {
            "file_name": os.path.abspath(path),
            "visualization": os.path.abspath(vis_path),
            "height": int(height),
            "width": int(width),
            "vis_threshold": thresh,
            "instances": model_zoo.instances_to_records(keep, class_names),
        }

    def skip(path: str, error: str) -> None:
        """List an image that could not be read or predicted; the others go on."""
        print(f"warning: {error}", file=sys.stderr)
        failed.append({"file_name": os.path.abspath(path), "error": error})

    os.makedirs(args.output, exist_ok=True)
    records, used = [], set()
    failed, refused = [], 0
    for path in images:
        try:
            image = predictor.read(path)
        except RuntimeError as e:  # unreadable file
            skip(path, str(e))
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = stem, 1
        while name in used:  # same file name in two input folders
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        try:
            records.append(predict_one(path, image, name))
        except InvalidImageError as e:  # an exported model's input check, before it runs
            skip(path, f"Cannot predict image {path!r}: {e}")
            refused += 1
        del image  # before the next one is read: one full-size image at a time
    out = {
        "config": args.config_file,
        "checkpoint": checkpoint,
        "exported": args.exported,
        "dataset": None if args.exported else metadata.name,
        "class_names": class_names,
        "images": records,
        "failed": failed,
    }
    json_path = os.path.join(args.output, "predictions.json")
    atomic_write(json_path, lambda f: json.dump(out, f, indent=1), mode="w")
    print(f"wrote {len(records)} visualisations and {json_path}")
    if failed:
        what = "could not be read or predicted" if refused else "could not be read"
        raise SystemExit(
            f"error: {len(failed)} of {len(images)} images {what} (listed under 'failed' in "
            f"{json_path})"
        )
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
