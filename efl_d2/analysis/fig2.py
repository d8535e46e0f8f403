"""Paper Fig. 2: per category, log10 of (#positive / #negative) anchor samples under the config's
anchors and assigner (ATSS) on the training annotations, categories sorted by training frequency.
No model weights are involved.

For category j a sample is an anchor of one training image after the test-time resize; it is
*positive* for j if the assigner matches it to a ground-truth box of category j, *negative* for j
otherwise (background or another category), and ignored if the assigner ignores it (-1). Counts
are summed over images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from ..categories import UNKNOWN_FREQUENCY, category_image_counts, frequency_order
from ..data import class_frequencies
from .inputs import check_class_count, inference_resize

__all__ = ["Fig2Data", "count_positive_negative_samples", "fig2_data_from_config", "plot_fig2"]


@dataclass
class Fig2Data:
    """Per-category sample counts; arrays are indexed by contiguous class id.

    Attributes:
        positives, negatives: (C,) int64 sample counts summed over images.
        image_counts: (C,) training images containing the category (the sort key).
        order: (C,) class ids from most to least frequent.
        log_ratio: (C,) log10(positives / negatives); -inf where a category has no positive.
        num_images: images processed; num_samples: anchors summed over images.
        frequency: optional LVIS letters by class id; class_names: optional names.
    """

    positives: np.ndarray
    negatives: np.ndarray
    image_counts: np.ndarray
    num_images: int
    num_samples: int
    frequency: list | None = None
    class_names: list | None = None
    order: np.ndarray = field(init=False)
    log_ratio: np.ndarray = field(init=False)

    def __post_init__(self):
        self.order = frequency_order(self.image_counts)
        with np.errstate(divide="ignore"):
            self.log_ratio = np.log10(self.positives.astype(np.float64)) - np.log10(
                np.maximum(self.negatives, 1).astype(np.float64)
            )


def _resized_shape(height: int, width: int, resize: tuple | None) -> tuple:
    if resize is None:
        return height, width
    short, max_size = resize
    return T.ResizeShortestEdge.get_output_shape(height, width, short, max_size)


def _feature_sizes(height: int, width: int, strides: Sequence[int], size_divisibility: int) -> list:
    """Feature-map sizes of a stride-2^k conv backbone on an image padded to size_divisibility:
    every stride-2 layer (3x3 pad 1, 1x1, 3x3 max-pool pad 1) maps n to ceil(n / 2)."""
    if size_divisibility > 1:
        height = math.ceil(height / size_divisibility) * size_divisibility
        width = math.ceil(width / size_divisibility) * size_divisibility
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def _match(matcher, anchors: list, gt_boxes: Boxes) -> tuple:
    """(matched_idxs, labels) with labels 1 fg / 0 bg / -1 ignored, for ATSS-style matchers
    (``matcher(anchors_per_level, gt_boxes)``) and detectron2's IoU ``Matcher``."""
    if isinstance(matcher, Matcher):
        if len(gt_boxes) == 0:
            n = sum(len(a) for a in anchors)
            return torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int8)
        return matcher(pairwise_iou(gt_boxes, Boxes.cat(anchors)))
    return matcher(anchors, gt_boxes)


@torch.no_grad()
def count_positive_negative_samples(
    dataset_dicts: Sequence[dict],
    anchor_generator: torch.nn.Module,
    matcher: Callable,
    num_classes: int,
    *,
    resize: tuple | None = None,
    size_divisibility: int = 32,
) -> Fig2Data:
    """Count, per category, the positive and negative anchor samples the assigner produces.

    Args:
        dataset_dicts: detectron2 dataset dicts (``height``, ``width``, ``annotations`` with
            ``bbox`` / ``bbox_mode`` / ``category_id``); crowd boxes are left out.
        anchor_generator: e.g. ``DefaultAnchorGenerator``; its ``strides`` give the levels.
        matcher: ``ATSSMatcher``-like ``(anchors_per_level, gt_boxes) -> (idxs, labels)`` or a
            detectron2 ``Matcher`` (IoU based).
        num_classes: C.
        resize: (short edge, max size) applied to every image (boxes scaled alike); None keeps
            the original size.
        size_divisibility: the backbone pads images to a multiple of it (FPN: 32).
    """
    strides = [int(s) for s in anchor_generator.strides]
    positives = np.zeros(num_classes, dtype=np.int64)
    valid_total = np.zeros(num_classes, dtype=np.int64)
    anchors_cache: dict = {}
    num_samples = 0
    for record in dataset_dicts:
        h0, w0 = record["height"], record["width"]
        h, w = _resized_shape(h0, w0, resize)
        sizes = tuple(_feature_sizes(h, w, strides, size_divisibility))
        if sizes not in anchors_cache:
            fake = [torch.empty(1, 0, fh, fw) for fh, fw in sizes]
            anchors_cache[sizes] = anchor_generator(fake)
        anchors = anchors_cache[sizes]
        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor(
            [
                BoxMode.convert(a["bbox"], a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
                for a in anns
            ],
            dtype=torch.float32,
        ).reshape(-1, 4)
        boxes *= torch.tensor([w / w0, h / h0, w / w0, h / h0])
        classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        matched, labels = _match(matcher, anchors, Boxes(boxes))
        fg = labels == 1
        valid = int((labels >= 0).sum())
        positives += np.bincount(classes[matched[fg]].numpy(), minlength=num_classes)[:num_classes]
        valid_total += valid
        num_samples += valid
    negatives = valid_total - positives
    return Fig2Data(
        positives=positives,
        negatives=negatives,
        image_counts=category_image_counts(dataset_dicts, num_classes),
        num_images=len(dataset_dicts),
        num_samples=num_samples,
    )


def fig2_data_from_config(
    cfg, dataset_name: str | None = None, max_images: int | None = None
) -> Fig2Data:
    """:func:`count_positive_negative_samples` with the config's anchors, assigner, backbone
    padding and test-time resize, on its training dataset (empty images dropped, as in
    training; no repeat-factor sampling).

    Args:
        cfg: a LazyConfig with ``model.anchor_generator`` and ``model.anchor_matcher``.
        dataset_name: default ``cfg.dataloader.train.dataset.names`` (first name).
        max_images: only the first N images (in the dataset's order).
    """
    from detectron2.config import instantiate
    from detectron2.data import get_detection_dataset_dicts
    from omegaconf import OmegaConf

    if "anchor_matcher" not in cfg.model or "anchor_generator" not in cfg.model:
        raise ValueError(
            "Fig. 2 needs an anchor-based detector config with model.anchor_generator and "
            "model.anchor_matcher (e.g. ATSS or RetinaNet)."
        )
    if dataset_name is None:
        names = OmegaConf.select(cfg, "dataloader.train.dataset.names")
        dataset_name = names if isinstance(names, str) else names[0]
    dicts = get_detection_dataset_dicts(dataset_name, filter_empty=True)
    if max_images is not None:
        dicts = dicts[:max_images]
    num_classes = int(cfg.model.num_classes)
    check_class_count(dataset_name, num_classes)
    backbone = instantiate(cfg.model.backbone)
    data = count_positive_negative_samples(
        dicts,
        instantiate(cfg.model.anchor_generator),
        instantiate(cfg.model.anchor_matcher),
        num_classes,
        resize=inference_resize(cfg),
        size_divisibility=int(getattr(backbone, "size_divisibility", 0) or 1),
    )
    data.frequency = class_frequencies(dataset_name, num_classes)
    data.class_names = (
        list(getattr(MetadataCatalog.get(dataset_name), "thing_classes", []) or []) or None
    )
    return data


def plot_fig2(data: Fig2Data, output: str, title: str = "") -> dict:
    """Save Fig. 2 as a PNG: log10(#pos / #neg) per category, most frequent category first.

    Categories without positive samples are not drawn (their ratio is 0, log -inf).

    Returns:
        ``{"x": ranks, "y": values, "class_ids": ...}`` of the drawn points, read back from
        the figure, in rank order.
    """
    from matplotlib.figure import Figure

    from ..evaluation.plots import scatter_by_frequency

    order = data.order
    y = data.log_ratio[order]
    x = np.arange(len(order))
    finite = np.isfinite(y)
    letters = [data.frequency[i] if data.frequency else UNKNOWN_FREQUENCY for i in order]
    # a Figure of its own, not pyplot's: the caller's backend (e.g. a notebook's) is left alone
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    drawn = scatter_by_frequency(ax, x[finite], y[finite], np.asarray(letters)[finite])
    ax.set_xlabel("category index, sorted by number of training images (descending)")
    ax.set_ylabel("log10(#positive / #negative samples)")
    missing = int((~finite).sum())
    ax.set_title(
        title
        or f"Positive / negative samples per category ({data.num_images} images"
        + (f"; {missing} categories without positives not drawn)" if missing else ")")
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    xs = np.concatenate([d[0] for d in drawn.values()]) if drawn else np.zeros(0)
    ys = np.concatenate([d[1] for d in drawn.values()]) if drawn else np.zeros(0)
    sort = np.argsort(xs, kind="stable")
    xs, ys = xs[sort].astype(np.int64), ys[sort]
    return {"x": xs, "y": ys, "class_ids": order[xs]}
