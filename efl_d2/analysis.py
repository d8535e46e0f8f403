"""Computations behind the paper's analysis figures and the inspection notebook.

- Fig. 2 (:func:`count_positive_negative_samples`, :func:`fig2_data_from_config`,
  :func:`plot_fig2`): per category, log10 of (#positive / #negative) anchor samples under the
  config's anchors and assigner (ATSS) on the training annotations; categories sorted by training
  frequency. No model weights are involved.
- Fig. 4 (:func:`mean_scores_per_category`, :func:`plot_fig4`): per category, the mean predicted
  probability sigmoid(logit_j) of its positive samples and of its negative samples, for one or
  more checkpoints (focal vs EFL side by side).
- LVIS per-category AP (:func:`lvis_predictions`, :func:`evaluate_lvis`,
  :func:`per_category_ap`): AP of each category from ``LVISEval.eval["precision"]`` and the
  r / c / f group means.
- EFL statistics (:func:`loss_category_statistics`): g_j, gamma_j of a model's loss buffers.

Definitions (sigmoid classifiers have one binary problem per category): for category j a sample is
an anchor of one training/val image after the test-time resize; it is *positive* for j if the
assigner matches it to a ground-truth box of category j, *negative* for j otherwise (background
or another category), and ignored if the assigner ignores it (-1). Counts are summed over images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from .evaluation import categories as _categories
from .evaluation.categories import FREQUENCY_COLORS, FREQUENCY_NAMES  # noqa: F401  (re-exported)

__all__ = [
    "Fig2Data",
    "Fig4Data",
    "category_image_counts",
    "check_class_count",
    "class_frequency_groups",
    "count_positive_negative_samples",
    "evaluate_lvis",
    "fig2_data_from_config",
    "frequency_order",
    "loss_category_statistics",
    "lvis_predictions",
    "mean_scores_per_category",
    "per_category_ap",
    "plot_fig2",
    "plot_fig4",
    "scoring_mapper_from_config",
]


# ----------------------------------------------------------------------------- categories


def category_image_counts(dataset_dicts: Iterable[dict], num_classes: int) -> np.ndarray:
    """(C,) int64: number of images containing each contiguous category id."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for record in dataset_dicts:
        present = {
            a["category_id"] for a in record.get("annotations", []) if not a.get("iscrowd", 0)
        }
        for c in present:
            counts[c] += 1
    return counts


def frequency_order(counts: Sequence[float]) -> np.ndarray:
    """Class indices from the most to the least frequent (stable: lower index first on ties)."""
    return np.argsort(-np.asarray(counts, dtype=np.float64), kind="stable")


def class_frequency_groups(dataset_name: str, num_classes: int | None = None) -> list | None:
    """LVIS frequency letter ('r'/'c'/'f') of each contiguous class of a registered dataset.

    From the metadata's ``class_frequency`` (mini-LVIS), else from detectron2's LVIS v1 category
    table for 1203-class LVIS v1 datasets; None when unknown.
    """
    meta = MetadataCatalog.get(dataset_name)
    freq = getattr(meta, "class_frequency", None)
    if freq is not None:
        return list(freq)
    n = num_classes or len(getattr(meta, "thing_classes", []) or [])
    if n == 1203 and "v1" in dataset_name:
        from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

        return _categories.category_frequencies(LVIS_CATEGORIES)
    return None


def check_class_count(dataset_name: str, num_classes: int) -> None:
    """Raise a clear error when a registered dataset's category count differs from the model's."""
    names = getattr(MetadataCatalog.get(dataset_name), "thing_classes", None)
    if names is not None and len(names) != num_classes:
        raise ValueError(
            f"The model has num_classes={num_classes} but dataset {dataset_name!r} has "
            f"{len(names)} categories: use a config made for this dataset (or set "
            "model.num_classes), or the dataset the config was made for."
        )


# ----------------------------------------------------------------------------- Fig. 2


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


def _test_resize(cfg) -> tuple | None:
    from detectron2.config import instantiate
    from omegaconf import OmegaConf

    augs = OmegaConf.select(cfg, "dataloader.test.mapper.augmentations", default=None)
    for aug in instantiate(augs) if augs is not None else []:
        if isinstance(aug, T.ResizeShortestEdge):
            return int(max(aug.short_edge_length)), int(aug.max_size)
    return None


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
        resize=_test_resize(cfg),
        size_divisibility=int(getattr(backbone, "size_divisibility", 0) or 1),
    )
    data.frequency = class_frequency_groups(dataset_name, num_classes)
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

    from .evaluation.plots import scatter_by_frequency

    order = data.order
    y = data.log_ratio[order]
    x = np.arange(len(order))
    finite = np.isfinite(y)
    letters = [data.frequency[i] if data.frequency else "?" for i in order]
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


# ----------------------------------------------------------------------------- Fig. 4


@dataclass
class Fig4Data:
    """Mean predicted probability per category; arrays indexed by contiguous class id.

    ``pos_mean[j]`` = mean of sigmoid(logit_j) over the positive samples of j (NaN if none);
    ``neg_mean[j]`` over its negative samples; ``pos_count`` / ``neg_count`` the sample counts.
    """

    pos_mean: np.ndarray
    neg_mean: np.ndarray
    pos_count: np.ndarray
    neg_count: np.ndarray
    num_images: int


def scoring_mapper_from_config(cfg):
    """A ``DatasetMapper`` that applies the config's *test* resize but keeps the annotations
    (``is_train=True``, no random augmentation), for scoring samples against their labels."""
    from detectron2.config import instantiate
    from detectron2.data import DatasetMapper
    from omegaconf import OmegaConf

    mapper = OmegaConf.select(cfg, "dataloader.test.mapper")
    augs = instantiate(mapper.augmentations)
    return DatasetMapper(
        is_train=True,
        augmentations=augs,
        image_format=mapper.get("image_format", "BGR"),
        use_instance_mask=False,
        use_keypoint=False,
        recompute_boxes=False,
    )


@torch.no_grad()
def mean_scores_per_category(
    model: torch.nn.Module, dataset_dicts: Sequence[dict], mapper: Callable
) -> Fig4Data:
    """Mean sigmoid classification score of positive and negative samples per category.

    Args:
        model: one of efl_d2's dense detectors (ATSS, PAA, PluggableRetinaNet, PluggableFCOS:
            ``label_anchors(anchors, gt, pred_logits=, pred_deltas=)``); the first two head
            outputs must be the class logits (N, A*C, H, W) and box deltas (N, A*4, H, W).
        dataset_dicts: the images to score (with annotations).
        mapper: maps a dataset dict to ``{"image", "instances"}`` (see
            :func:`scoring_mapper_from_config`).

    Samples and labels are exactly those of a training step: anchors from the features, labels
    from ``model.label_anchors`` (0..C-1 positive, C background, -1 ignored).
    """
    from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K

    was_training = model.training
    model.eval()
    num_classes = int(model.num_classes)
    device = model.pixel_mean.device
    pos_sum = torch.zeros(num_classes, dtype=torch.float64)
    all_sum = torch.zeros(num_classes, dtype=torch.float64)
    pos_cnt = torch.zeros(num_classes, dtype=torch.int64)
    valid_cnt = 0
    n = 0
    try:
        for record in dataset_dicts:
            inputs = mapper(record)
            if inputs is None:
                continue
            images = model.preprocess_image([inputs])
            features = model.backbone(images.tensor)
            features = [features[f] for f in model.head_in_features]
            head = model.head(features)
            logits = torch.cat([permute_to_N_HWA_K(x, num_classes) for x in head[0]], dim=1)
            deltas = torch.cat([permute_to_N_HWA_K(x, 4) for x in head[1]], dim=1)
            anchors = model.anchor_generator(features)
            gt = [inputs["instances"].to(device)]
            labels = model.label_anchors(anchors, gt, pred_logits=logits, pred_deltas=deltas)[0][0]
            logits = logits[0]
            probs = logits.sigmoid().double().cpu()
            labels = labels.cpu()
            valid = labels >= 0
            fg = valid & (labels < num_classes)
            all_sum += probs[valid].sum(dim=0)
            pos_sum.index_add_(0, labels[fg], probs[fg, labels[fg]])
            pos_cnt += torch.bincount(labels[fg], minlength=num_classes)[:num_classes]
            valid_cnt += int(valid.sum())
            n += 1
    finally:
        model.train(was_training)
    neg_sum = all_sum - pos_sum
    neg_cnt = valid_cnt - pos_cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        pos_mean = (pos_sum / pos_cnt.double()).numpy()
        neg_mean = (neg_sum / neg_cnt.double()).numpy()
    pos_mean[pos_cnt.numpy() == 0] = np.nan
    neg_mean[neg_cnt.numpy() == 0] = np.nan
    return Fig4Data(pos_mean, neg_mean, pos_cnt.numpy(), neg_cnt.numpy(), n)


def plot_fig4(
    panels: dict,
    order: Sequence[int],
    output: str,
    *,
    frequency: Sequence[str] | None = None,
) -> dict:
    """Save Fig. 4 as a PNG: one panel per checkpoint (e.g. {"focal": data, "EFL": data}),
    mean positive and mean negative score per category, categories in ``order``.

    Returns:
        ``{panel: {"positive": (x, y), "negative": (x, y)}}`` read back from the drawn lines,
        x = rank in ``order``.
    """
    from matplotlib.figure import Figure

    order = np.asarray(order)
    fig = Figure(figsize=(6 * len(panels), 4))  # not pyplot's: see plot_fig2
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)
    drawn = {}
    x = np.arange(len(order))
    for ax, (name, data) in zip(axes[0], panels.items()):
        pos = ax.plot(
            x, data.pos_mean[order], "o-", markersize=3, color="tab:green", label="positive samples"
        )[0]
        neg = ax.plot(
            x,
            data.neg_mean[order],
            "s-",
            markersize=3,
            color="tab:purple",
            label="negative samples",
        )[0]
        if frequency is not None:
            letters = [frequency[i] for i in order]
            for i, letter in enumerate(letters):
                if letter == "r":
                    ax.axvspan(i - 0.5, i + 0.5, color=FREQUENCY_COLORS["r"], alpha=0.08, lw=0)
        ax.set_title(f"{name}: mean predicted score")
        ax.set_xlabel("category index, sorted by frequency (rare shaded)")
        ax.grid(alpha=0.3)
        drawn[name] = {
            "positive": (
                np.asarray(pos.get_xdata()),
                np.asarray(pos.get_ydata(), dtype=np.float64),
            ),
            "negative": (
                np.asarray(neg.get_xdata()),
                np.asarray(neg.get_ydata(), dtype=np.float64),
            ),
        }
    axes[0][0].set_ylabel("mean sigmoid score")
    axes[0][0].legend(loc="best")
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    return drawn


# ----------------------------------------------------------------------------- LVIS AP


@torch.no_grad()
def lvis_predictions(
    model: torch.nn.Module, dataset_name: str, mapper: Callable, max_images: int | None = None
) -> tuple:
    """Run ``model`` on a registered LVIS-format dataset and format the detections as LVIS
    results (``image_id``, dataset ``category_id``, ``bbox`` XYWH, ``score``), exactly as
    detectron2's ``LVISEvaluator`` does.

    Returns:
        (results list, evaluated image ids).
    """
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    meta = MetadataCatalog.get(dataset_name)
    dicts = DatasetCatalog.get(dataset_name)
    if max_images is not None:
        dicts = dicts[:max_images]
    reverse = None
    if hasattr(meta, "thing_dataset_id_to_contiguous_id"):
        reverse = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    was_training = model.training
    model.eval()
    results = []
    try:
        for record in dicts:
            inputs = mapper(record)
            instances = model([inputs])[0]["instances"].to("cpu")
            for r in instances_to_coco_json(instances, record["image_id"]):
                r["category_id"] = reverse[r["category_id"]] if reverse else r["category_id"] + 1
                results.append(r)
    finally:
        model.train(was_training)
    return results, [r["image_id"] for r in dicts]


def per_category_ap(lvis_eval) -> dict:
    """Per-category box AP from an evaluated ``lvis.LVISEval``
    (:func:`efl_d2.evaluation.categories.per_category_ap` on its ``eval["precision"]``, area
    "all"): AP_k is the mean over IoU and recall thresholds of the valid entries, NaN without
    ground truth, so the mean of AP_k over a frequency group equals LVIS's AP_r / AP_c / AP_f.

    Returns:
        ``{"category_id", "name", "frequency", "image_count", "ap"}`` -> lists over
        ``lvis_eval.params.cat_ids`` (sorted ids), AP in [0, 1].
    """
    rows = _categories.per_category_ap(
        lvis_eval.eval["precision"],
        lvis_eval.params.cat_ids,
        lvis_eval.lvis_gt.cats,
        area_index=lvis_eval.params.area_rng_lbl.index("all"),
    )
    return {key: [r[key] for r in rows] for key in _categories.REPORT_COLUMNS}


def evaluate_lvis(
    gt_json: str, results: list, *, image_ids: Sequence[int] | None = None, max_dets: int = 300
) -> tuple:
    """LVIS box evaluation restricted to ``image_ids`` (default all GT images), by
    :mod:`efl_d2.evaluation` (lvis-api's numbers).

    Returns:
        (summary: LVIS metrics in percent, NaN where undefined, plus ``APr_percat`` /
        ``APc_percat`` / ``APf_percat``, the means of the per-category APs per group;
        per-category dict ``{"category_id", "name", "frequency", "image_count", "ap"}`` -> lists
        over the sorted category ids, AP in [0, 1]).
    """
    from .data.datasets import read_json
    from .evaluation import lvis_arrays, score_lvis

    if not results:
        nan = float("nan")
        return {k: nan for k in ("AP", "AP50", "AP75", "APr", "APc", "APf")}, None
    gt = read_json(gt_json)
    scores = score_lvis(lvis_arrays(gt, results, max_dets_per_image=max_dets, image_ids=image_ids))
    summary = {k: float(v) * 100 if v >= 0 else float("nan") for k, v in scores.results.items()}
    rows = _categories.per_category_ap(scores.precision, scores.cat_ids.tolist(), gt["categories"])
    for g, group in _categories.per_group_summary(rows).items():
        summary[f"AP{g}_percat"] = group["ap"] * 100
    return summary, {key: [r[key] for r in rows] for key in _categories.REPORT_COLUMNS}


# ----------------------------------------------------------------------------- EFL statistics


def loss_category_statistics(model: torch.nn.Module) -> dict:
    """``{module name: {"g": (C,), "gamma": (C,), ...}}`` (numpy) of every loss in ``model``
    that keeps per-category gradient statistics (EFL, EQLv2&Focal); empty if none."""
    from .losses import GradientStatistics

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, GradientStatistics):
            stats = module.category_statistics()
            out[name or "loss"] = {k: v.detach().double().cpu().numpy() for k, v in stats.items()}
    return out
