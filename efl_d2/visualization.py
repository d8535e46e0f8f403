"""Pictures of a detector's predictions, next to the ground truth, with Detectron2's ``Visualizer``.

One rule decides which detections are drawn, everywhere (the training summary's picture,
``tools/predict.py``, ``projects/inspect_predictions.ipynb``): :func:`score_threshold`. A detector
keeps up to 300 low-scoring boxes per image for AP, so something must be cut; a fixed cut (0.3)
fits a well-calibrated detector but shows nothing for a young or long-tailed one, whose scores
are low (focal-style losses and rare classes score low). The rule is relative to the image's best
detection, with a floor, and every picture says which threshold it used.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, Metadata
from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image

__all__ = [
    "SCORE_FLOOR",
    "SCORE_FRACTION",
    "class_colored_metadata",
    "draw_ground_truth",
    "draw_predictions",
    "score_threshold",
    "threshold_rule",
    "write_summary_picture",
    "write_val_picture",
]

logger = logging.getLogger(__name__)

SCORE_FRACTION = 0.5  # drawn: at least this fraction of the image's top score ...
SCORE_FLOOR = 0.05  # ... and at least this (detectron2's usual test score threshold)
SUMMARY_PICTURE = "predictions_val.png"


def score_threshold(scores: torch.Tensor, fixed: float | None = None) -> float:
    """The minimum score of the detections drawn on one image.

    Args:
        scores: (N,) detection scores of the image, in [0, 1].
        fixed: a fixed threshold to use instead of the rule.

    Returns:
        ``fixed`` if given, else ``max(SCORE_FLOOR, SCORE_FRACTION * scores.max())`` (the floor
        when there are no detections): the boxes the model rates at least half as likely as its
        best one on this image.
    """
    if fixed is not None:
        return float(fixed)
    top = float(scores.max()) if len(scores) else 0.0
    return max(SCORE_FLOOR, SCORE_FRACTION * top)


def threshold_rule(fixed: float | None = None) -> str:
    """The threshold rule in words, as the pictures state it."""
    if fixed is not None:
        return f"score >= {fixed:g} (fixed)"
    return f"score >= max({SCORE_FLOOR:g}, {SCORE_FRACTION:g} x the image's top score)"


def _threshold_note(instances: Instances, thresh: float, fixed: float | None) -> str:
    """``score >= t`` and where t comes from (fixed / the image's top score / the floor)."""
    if fixed is not None:
        return f"score >= {thresh:.2f} (fixed)"
    if len(instances) and SCORE_FRACTION * float(instances.scores.max()) >= SCORE_FLOOR:
        return f"score >= {thresh:.2f} ({SCORE_FRACTION:g} x top)"
    return f"score >= {thresh:.2f} (floor)"


def class_colored_metadata(metadata) -> Metadata:
    """A copy of a dataset's metadata (class names) with one fixed colour per class, so a class
    has the same colour in the prediction and the ground-truth panels. The catalog's entry is
    left alone (its attributes can be set only once)."""
    names = list(metadata.thing_classes)
    palette = colormap(rgb=True, maximum=255)
    colors = [tuple(int(c) for c in palette[k % len(palette)]) for k in range(len(names))]
    return Metadata(name=metadata.name, thing_classes=names, thing_colors=colors)


def _visualizer(image_rgb: np.ndarray, metadata, scale: float) -> Visualizer:
    colored = metadata if metadata.get("thing_colors") else class_colored_metadata(metadata)
    return Visualizer(image_rgb, colored, scale=scale, instance_mode=ColorMode.SEGMENTATION)


def _caption(vis: Visualizer, text: str) -> None:
    # top-left, on detectron2's dark text box; the font follows the image size as the labels do
    vis.draw_text(text, (2, 2), color="w", horizontal_alignment="left")


def draw_predictions(
    image_rgb: np.ndarray,
    instances: Instances,
    metadata,
    *,
    fixed_threshold: float | None = None,
    scale: float = 1.0,
) -> tuple[np.ndarray, float, int]:
    """Draw the detections that pass :func:`score_threshold`, with the threshold written on it.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        instances: the model's detections on it (original-image coordinates).
        metadata: has ``thing_classes`` (the labels' class names).
        fixed_threshold: a fixed score threshold instead of the rule.
        scale: output size / image size.

    Returns:
        (the drawing as an (H*scale, W*scale, 3) uint8 RGB array, the threshold, boxes drawn).
    """
    instances = instances.to("cpu")
    thresh = score_threshold(instances.scores, fixed_threshold)
    shown = instances[instances.scores >= thresh]
    vis = _visualizer(image_rgb, metadata, scale)
    vis.draw_instance_predictions(shown)
    note = _threshold_note(instances, thresh, fixed_threshold)
    _caption(vis, f"{len(shown)} of {len(instances)} boxes, {note}")
    return vis.get_output().get_image(), thresh, len(shown)


def draw_ground_truth(
    image_rgb: np.ndarray, dataset_dict: dict, metadata, *, scale: float = 1.0
) -> np.ndarray:
    """Draw a dataset dict's boxes and class names (masks left out: the detectors predict boxes).

    Returns:
        (H*scale, W*scale, 3) uint8 RGB array.
    """
    annos = [
        {k: v for k, v in a.items() if k not in ("segmentation", "keypoints")}
        for a in dataset_dict.get("annotations", [])
    ]
    vis = _visualizer(image_rgb, metadata, scale)
    vis.draw_dataset_dict({**dataset_dict, "annotations": annos})
    _caption(vis, f"ground truth: {len(annos)} objects")
    return vis.get_output().get_image()


def _grid(rows: list[list[np.ndarray]], pad: int = 4) -> np.ndarray:
    """Rows of RGB panels on a white canvas, each panel at the top-left of its cell."""
    heights = [max(p.shape[0] for p in row) for row in rows]
    widths = [max(row[c].shape[1] for row in rows) for c in range(len(rows[0]))]
    canvas = np.full(
        (sum(heights) + pad * (len(rows) + 1), sum(widths) + pad * 3, 3), 255, np.uint8
    )
    y = pad
    for row, h in zip(rows, heights):
        x = pad
        for panel, w in zip(row, widths):
            canvas[y : y + panel.shape[0], x : x + panel.shape[1]] = panel
            x += w + pad
        y += h + pad
    return canvas


def _banner(text: str, width: int, scale: float) -> np.ndarray:
    """A white strip of ``width`` pixels with ``text`` written on it."""
    vis = Visualizer(np.full((int(22 * scale), width, 3), 255, np.uint8), scale=1.0)
    vis.draw_text(text, (4, 2), font_size=9 * scale, color="w", horizontal_alignment="left")
    return vis.get_output().get_image()


def write_val_picture(
    predictor,
    dataset_name: str,
    output_path: str,
    *,
    num_images: int = 3,
    scale: float = 1.5,
    title: str = "",
) -> str:
    """Predictions on the first ``num_images`` images of a registered dataset (left) next to
    their ground truth (right), one image per row, saved as a PNG.

    Args:
        predictor: a :class:`efl_d2.model_zoo.LazyPredictor` (the model and its test resize).
        dataset_name: a dataset registered in ``DatasetCatalog`` with ``thing_classes`` metadata.
        output_path: where to write the PNG (folders are created).
        num_images: rows of the picture.
        scale: panel size / image size (labels stay readable on small images).
        title: first line of the banner; the second states the threshold rule.

    Returns:
        ``output_path``.
    """
    from detectron2.data import MetadataCatalog

    metadata = class_colored_metadata(MetadataCatalog.get(dataset_name))
    rows = []
    for d in DatasetCatalog.get(dataset_name)[:num_images]:
        image = predictor.read(d["file_name"])
        rgb = predictor.to_rgb(image)
        pred, _, _ = draw_predictions(rgb, predictor(image), metadata, scale=scale)
        rows.append([pred, draw_ground_truth(rgb, d, metadata, scale=scale)])
    if not rows:
        raise ValueError(f"dataset {dataset_name!r} has no images")
    grid = _grid(rows)
    rule = f"left: predictions, drawn where {threshold_rule()}; right: ground truth"
    lines = [t for t in (title, rule) if t]
    picture = np.concatenate([_banner(t, grid.shape[1], scale) for t in lines] + [grid])
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    # A 256-colour palette makes the PNG ~4x smaller (the synthetic images are noisy); "maximum
    # coverage" keeps every colour close to its original, so a red star is not drawn brown.
    Image.fromarray(picture).quantize(256, method=Image.Quantize.MAXCOVERAGE, kmeans=2).save(
        output_path, optimize=True
    )
    return output_path


def write_summary_picture(cfg, *, trained: bool) -> str | None:
    """The training summary's picture: the final model (``model_final.pth`` after training, the
    evaluated ``train.init_checkpoint`` with ``--eval-only``) on the first ``train.vis_images``
    images of the config's test dataset, written to ``<train.output_dir>/predictions_val.png``.

    Returns:
        the picture's path, or None when ``train.vis_images`` is 0 or the test dataset has no
        class names (nothing to label the boxes with).
    """
    from omegaconf import OmegaConf

    from .model_zoo import LazyPredictor, build_model

    num_images = int(OmegaConf.select(cfg, "train.vis_images", default=3) or 0)
    names = OmegaConf.select(cfg, "dataloader.test.dataset.names", default=None)
    name = names if isinstance(names, str) or names is None else names[0]
    if num_images <= 0 or name is None:
        return None
    from detectron2.data import MetadataCatalog

    if not hasattr(MetadataCatalog.get(name), "thing_classes"):
        logger.warning(f"No picture of predictions: {name!r} has no class names (thing_classes).")
        return None
    out = cfg.train.output_dir
    weights = os.path.join(out, "model_final.pth") if trained else cfg.train.init_checkpoint
    model = build_model(cfg, weights=weights or None, device=cfg.train.device, strict=True)
    loss = getattr(model, "cls_loss", None)
    title = type(model).__name__ + (f" + {type(loss).__name__}" if loss is not None else "")
    title += (f", {cfg.train.max_iter} iterations" if trained else "") + f", on {name}"
    return write_val_picture(
        LazyPredictor(cfg, model),
        name,
        os.path.join(out, SUMMARY_PICTURE),
        num_images=num_images,
        title=title,
    )
