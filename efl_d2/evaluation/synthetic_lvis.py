"""Seeded synthetic LVIS v1-format evaluation data: LVIS records, and an LVIS v1 val-sized ground
truth with detector-like results (JSON-able dicts only, no images).

The record builders (:func:`lvis_category`, :func:`lvis_image`, :func:`box_annotations`) make
the fields lvis-api and detectron2's LVIS loader read; the tests build their small cases with them.

:func:`generate` is the data of ``tools/benchmark_lvis_eval.py``, at LVIS v1 val's size (19,809
images, 244,707 annotations):

* the 1203 LVIS v1 categories with their real ``frequency`` (detectron2's ``LVIS_CATEGORIES``) and
  train ``image_count`` (detectron2's ``LVIS_CATEGORY_IMAGE_COUNT``);
* a category's val image count is ``ceil(train image_count / 5)`` (LVIS v1 val has about 1/5 of
  the train images), 72,702 (image, category) pairs in all; each pair holds one instance plus a
  share of the remaining instances (multinomial with gamma-distributed weights, so some pairs are
  crowded). Categories prefer busy images (log-normal weights);
* images: LVIS/COCO-like sizes (long side 640 or 500), sparse non-contiguous ids; per image a few
  ``neg_category_ids`` (Poisson, mean 3, never a category with GT there, frequent ones likelier)
  and ``not_exhaustive_category_ids`` (each positive category with probability 0.1);
* annotations: boxes with log-uniform sides from 4 px to 90% of the short image side, an 8-point
  polygon with cut corners, ``area`` the polygon's area;
* detections per image, sorted by score like a detector's output: 1 + Poisson(1) jittered copies
  of each GT box with the right class, Poisson(0.7) with a wrong class (half of them a negative
  category of the image), the rest random boxes (40% with a category that is positive or negative
  in the image); scores from per-kind beta distributions, rounded to 6 decimals, 10% of them to 2
  decimals (many exact ties).

Each image is seeded by its index, so the first n images of the full-scale set are the same for
every n. Only numpy is imported here; detectron2's category metadata is read when needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "NUM_VAL_ANNOTATIONS",
    "NUM_VAL_IMAGES",
    "ValLayout",
    "box_annotations",
    "full_layout",
    "generate",
    "lvis_category",
    "lvis_image",
    "lvis_v1_categories",
    "val_image_counts",
]

NUM_VAL_IMAGES = 19_809
NUM_VAL_ANNOTATIONS = 244_707
TRAIN_TO_VAL_DIVISOR = 5  # val image count of a category = ceil(train image_count / 5)
MAX_IMAGE_ID = 600_000
NEG_PER_IMAGE_MEAN = 3.0
NOT_EXHAUSTIVE_PROB = 0.1
TIE_FRACTION = 0.1


# --------------------------------------------------------------------------------------------
# LVIS v1 records
# --------------------------------------------------------------------------------------------


def lvis_category(cat_id: int, frequency: str, image_count: int) -> dict:
    """An LVIS v1 category record (all the fields lvis-api and the loaders read)."""
    return {
        "id": cat_id,
        "name": f"cat{cat_id}",
        "synonyms": [f"cat{cat_id}"],
        "def": "",
        "synset": f"s.{cat_id}",
        "frequency": frequency,
        "image_count": image_count,
        "instance_count": image_count,
    }


def lvis_image(
    image_id: int,
    *,
    width: int = 100,
    height: int = 100,
    neg_category_ids: Iterable[int] = (),
    not_exhaustive_category_ids: Iterable[int] = (),
) -> dict:
    """An LVIS v1 image record; its ``coco_url`` names the file ``val2017/<12-digit id>.jpg``."""
    return {
        "id": image_id,
        "width": width,
        "height": height,
        "neg_category_ids": list(neg_category_ids),
        "not_exhaustive_category_ids": list(not_exhaustive_category_ids),
        "coco_url": f"http://images.cocodataset.org/val2017/{image_id:012d}.jpg",
    }


def box_annotations(boxes: Iterable, *, areas=None, polygons=None, first_id: int = 1) -> list:
    """LVIS annotations (ids from ``first_id``) of ``(image_id, category_id, [x, y, w, h])`` boxes.

    ``areas`` and ``polygons`` (flat ``[x0, y0, x1, y1, ...]``) default to each box's own area and
    outline (lvis-api's loaders expect a segmentation).
    """
    boxes = list(boxes)
    if areas is None:
        areas = [b[2] * b[3] for _, _, b in boxes]
    if polygons is None:
        polygons = [
            [b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3], b[0], b[1] + b[3]]
            for _, _, b in boxes
        ]
    return [
        {
            "id": first_id + k,
            "image_id": im,
            "category_id": c,
            "bbox": b,
            "area": area,
            "segmentation": [poly],
        }
        for k, ((im, c, b), area, poly) in enumerate(zip(boxes, areas, polygons))
    ]


# --------------------------------------------------------------------------------------------
# LVIS v1 val-sized ground truth and detections
# --------------------------------------------------------------------------------------------


def lvis_v1_categories() -> list[dict]:
    """The 1203 LVIS v1 categories as in the val json: detectron2's metadata plus the train
    ``image_count`` of each category, sorted by id."""
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
    from detectron2.data.datasets.lvis_v1_category_image_count import LVIS_CATEGORY_IMAGE_COUNT

    counts = {c["id"]: c["image_count"] for c in LVIS_CATEGORY_IMAGE_COUNT}
    cats = sorted((dict(c, image_count=counts[c["id"]]) for c in LVIS_CATEGORIES), key=_id)
    if [c["id"] for c in cats] != list(range(1, len(cats) + 1)):
        raise RuntimeError("expected contiguous LVIS v1 category ids 1..1203")
    return cats


def _id(record: dict) -> int:
    return record["id"]


def val_image_counts(*, train_image_counts: Sequence[int]):
    """The generator's rule: ``ceil(train image_count / 5)`` val images per category."""
    return -(-np.asarray(train_image_counts, dtype=np.int64) // TRAIN_TO_VAL_DIVISOR)


class ValLayout(NamedTuple):
    """Which categories (and how many instances) each image of the full-scale set holds."""

    image_ids: object  # (NUM_VAL_IMAGES,) sorted unique ints
    pair_image: object  # (P,) image index of each (image, category) pair, sorted
    pair_cat: object  # (P,) category id
    pair_count: object  # (P,) instances of the pair, >= 1
    ann_offset: object  # (NUM_VAL_IMAGES + 1,) first annotation index of each image


def _assign_pairs(*, rng, val_counts, cat_ids, num_images: int):
    """Each category gets its val count of distinct images; busy images are likelier (Gumbel
    top-k sampling with log-normal image weights)."""
    log_w = rng.normal(0.0, 0.6, num_images)
    images, cats = [], []
    for cat_id, k in zip(cat_ids, val_counts):
        keys = log_w + rng.gumbel(size=num_images)
        images.append(np.argpartition(-keys, k - 1)[:k])
        cats.append(np.full(k, cat_id))
    images, cats = np.concatenate(images), np.concatenate(cats)
    _fill_empty_images(rng=rng, images=images, num_images=num_images)
    order = np.lexsort((cats, images))
    return images[order], cats[order]


def _fill_empty_images(*, rng, images, num_images: int) -> None:
    """Move random pairs from images with several categories to images with none (in place), so
    every image has a positive category and every category keeps its image count."""
    per_image = np.bincount(images, minlength=num_images)
    for empty in np.flatnonzero(per_image == 0):
        j = int(rng.integers(len(images)))
        while per_image[images[j]] < 2:
            j = int(rng.integers(len(images)))
        per_image[images[j]] -= 1
        per_image[empty] += 1
        images[j] = empty


def _instances_per_pair(*, rng, num_pairs: int, total: int):
    """1 instance per pair plus a gamma-weighted multinomial share of the rest; sums to total."""
    extra = total - num_pairs
    if extra < 0:
        raise ValueError(f"{total} annotations cannot cover {num_pairs} (image, category) pairs")
    weights = rng.gamma(0.5, 1.0, num_pairs)
    return 1 + rng.multinomial(extra, weights / weights.sum())


def full_layout(*, seed: int, categories: Sequence[dict]) -> ValLayout:
    """The full-scale assignment: 19,809 image ids, the (image, category) pairs (each category in
    ``val_image_counts`` distinct images, every image in at least one pair) and their instance
    counts (244,707 in all)."""
    rng = np.random.default_rng([seed, 0])
    image_ids = np.sort(rng.choice(np.arange(1, MAX_IMAGE_ID), NUM_VAL_IMAGES, replace=False))
    counts = val_image_counts(train_image_counts=[c["image_count"] for c in categories])
    pair_image, pair_cat = _assign_pairs(
        rng=rng, val_counts=counts, cat_ids=[c["id"] for c in categories], num_images=len(image_ids)
    )
    pair_count = _instances_per_pair(rng=rng, num_pairs=len(pair_image), total=NUM_VAL_ANNOTATIONS)
    per_image = np.bincount(pair_image, weights=pair_count, minlength=len(image_ids))
    ann_offset = np.concatenate([[0], np.cumsum(per_image.astype(np.int64))])
    return ValLayout(image_ids, pair_image, pair_cat, pair_count, ann_offset)


def _image_size(*, rng) -> tuple[int, int]:
    long_side = 640 if rng.random() < 0.9 else 500
    short_side = int(rng.integers(long_side // 2, long_side + 1))
    return (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)


def _clip_xywh(*, boxes, width: int, height: int):
    """Clip [x, y, w, h] boxes to the image, at least 1 px wide and high, rounded to 0.01."""
    x1 = np.clip(boxes[:, 0], 0, width - 1)
    y1 = np.clip(boxes[:, 1], 0, height - 1)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], x1 + 1, width)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], y1 + 1, height)
    return np.round(np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), 2)


def _random_boxes(*, rng, n: int, width: int, height: int):
    """Log-uniform sides from 4 px to 90% of the short side, log-normal aspect ratios."""
    side = np.exp(rng.uniform(np.log(4.0), np.log(0.9 * min(width, height)), n))
    aspect = np.exp(rng.normal(0.0, 0.5, n))
    w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    x = rng.uniform(0.0, 1.0, n) * np.maximum(width - w, 0.0)
    y = rng.uniform(0.0, 1.0, n) * np.maximum(height - h, 0.0)
    return _clip_xywh(boxes=np.stack([x, y, w, h], axis=1), width=width, height=height)


def _jitter_boxes(*, rng, boxes, width: int, height: int):
    """Copies of boxes with centre shifts and log-scale noise of a random strength per copy."""
    n = len(boxes)
    sigma = rng.uniform(0.02, 0.3, n)
    w = boxes[:, 2] * np.exp(rng.normal(0.0, 1.0, n) * sigma)
    h = boxes[:, 3] * np.exp(rng.normal(0.0, 1.0, n) * sigma)
    cx = boxes[:, 0] + boxes[:, 2] / 2 + rng.normal(0.0, 1.0, n) * sigma * boxes[:, 2]
    cy = boxes[:, 1] + boxes[:, 3] / 2 + rng.normal(0.0, 1.0, n) * sigma * boxes[:, 3]
    jittered = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    return _clip_xywh(boxes=jittered, width=width, height=height)


def _polygons(*, rng, boxes):
    """8-point polygons (corners cut by a random fraction) and their areas."""
    f = rng.uniform(0.05, 0.45, len(boxes))
    x, y, w, h = boxes.T
    fw, fh = f * w, f * h
    xs = [x + fw, x + w - fw, x + w, x + w, x + w - fw, x + fw, x, x]
    ys = [y, y, y + fh, y + h - fh, y + h, y + h, y + h - fh, y + fh]
    flat = np.round(np.stack([c for pair in zip(xs, ys) for c in pair], axis=1), 2)
    areas = np.round(w * h * (1 - 2 * f**2), 2)
    return flat, areas


def _weighted_sample(*, rng, log_weights, k: int, exclude=()):
    """k distinct indices with probabilities proportional to exp(log_weights), minus exclude."""
    keys = log_weights + rng.gumbel(size=len(log_weights))
    keys[np.asarray(exclude, dtype=np.int64)] = -np.inf
    k = min(k, len(keys) - len(exclude))
    return np.argpartition(-keys, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)


def _image_gt(rng, index: int, layout: ValLayout, cat_log_w) -> tuple[dict, list[dict]]:
    """The image record and annotations of image ``index``."""
    width, height = _image_size(rng=rng)
    lo, hi = np.searchsorted(layout.pair_image, [index, index + 1])
    pos = layout.pair_cat[lo:hi]
    cats = np.repeat(pos, layout.pair_count[lo:hi])
    boxes = _random_boxes(rng=rng, n=len(cats), width=width, height=height)
    polys, areas = _polygons(rng=rng, boxes=boxes)
    not_exhaustive = pos[rng.random(len(pos)) < NOT_EXHAUSTIVE_PROB]
    num_neg = int(rng.poisson(NEG_PER_IMAGE_MEAN))
    neg = 1 + _weighted_sample(rng=rng, log_weights=cat_log_w, k=num_neg, exclude=pos - 1)
    image_id = int(layout.image_ids[index])
    image = lvis_image(
        image_id,
        width=width,
        height=height,
        neg_category_ids=sorted(neg.tolist()),
        not_exhaustive_category_ids=sorted(not_exhaustive.tolist()),
    )
    anns = box_annotations(
        ((image_id, c, b) for c, b in zip(cats.tolist(), boxes.tolist())),
        areas=areas.tolist(),
        polygons=polys.tolist(),
        first_id=int(layout.ann_offset[index]) + 1,
    )
    return image, anns


def _scores(*, rng, kinds):
    """Scores by kind (0 right class, 1 wrong class, 2 random box), some rounded into ties."""
    a = np.array([4.0, 2.0, 1.0])[kinds]
    b = np.array([2.0, 3.0, 4.0])[kinds]
    scores = np.round(rng.beta(a, b), 6)
    ties = rng.random(len(kinds)) < TIE_FRACTION
    scores[ties] = np.round(scores[ties], 2)
    return np.clip(scores, 0.0001, 1.0)


def _random_categories(*, rng, n: int, image_cats, cat_log_w):
    """40% a category of the image (positive or negative), else a frequency-weighted one."""
    p = np.exp(cat_log_w - cat_log_w.max())
    anywhere = 1 + rng.choice(len(p), n, p=p / p.sum())
    if len(image_cats) == 0:
        return anywhere
    local = rng.choice(image_cats, n)
    return np.where(rng.random(n) < 0.4, local, anywhere)


def _image_detections(rng, image: dict, anns: list[dict], dets_per_image: int, cat_log_w):
    """``dets_per_image`` detections of one image, sorted by score (stable)."""
    width, height = image["width"], image["height"]
    gt_boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    gt_cats = np.array([a["category_id"] for a in anns], dtype=np.int64)
    right = np.repeat(np.arange(len(anns)), 1 + rng.poisson(1.0, len(anns)))
    wrong = np.repeat(np.arange(len(anns)), rng.poisson(0.7, len(anns)))
    neg = np.array(image["neg_category_ids"], dtype=np.int64)
    wrong_cats = _random_categories(rng=rng, n=len(wrong), image_cats=neg, cat_log_w=cat_log_w)
    n_random = max(dets_per_image - len(right) - len(wrong), 0)
    image_cats = np.concatenate([np.unique(gt_cats), neg])
    boxes = np.concatenate(
        [
            _jitter_boxes(rng=rng, boxes=gt_boxes[right], width=width, height=height),
            _jitter_boxes(rng=rng, boxes=gt_boxes[wrong], width=width, height=height),
            _random_boxes(rng=rng, n=n_random, width=width, height=height),
        ]
    )[:dets_per_image]
    cats = np.concatenate(
        [
            gt_cats[right],
            wrong_cats,
            _random_categories(rng=rng, n=n_random, image_cats=image_cats, cat_log_w=cat_log_w),
        ]
    )[:dets_per_image]
    kinds = np.repeat([0, 1, 2], [len(right), len(wrong), n_random])[:dets_per_image]
    scores = _scores(rng=rng, kinds=kinds)
    order = np.argsort(-scores, kind="stable")
    image_id = image["id"]
    return [
        {"image_id": image_id, "category_id": c, "bbox": b, "score": s}
        for c, b, s in zip(cats[order].tolist(), boxes[order].tolist(), scores[order].tolist())
    ]


def generate(*, seed: int, num_images: int, dets_per_image: int) -> tuple[dict, Iterator]:
    """The ground-truth dict of the first ``num_images`` images and an iterator over their
    detection lists (one list per image, in image order)."""
    if not 1 <= num_images <= NUM_VAL_IMAGES:
        raise ValueError(f"num_images must be in [1, {NUM_VAL_IMAGES}], got {num_images}")
    categories = lvis_v1_categories()
    layout = full_layout(seed=seed, categories=categories)
    cat_log_w = np.log(np.array([c["image_count"] for c in categories], dtype=np.float64))
    images, annotations = [], []
    for index in range(num_images):
        image, anns = _image_gt(np.random.default_rng([seed, 1, index]), index, layout, cat_log_w)
        images.append(image)
        annotations.append(anns)
    gt = {
        "info": {"description": "synthetic LVIS v1 val (efl_d2 tools/benchmark_lvis_eval.py)"},
        "licenses": [],
        "images": images,
        "annotations": [a for anns in annotations for a in anns],
        "categories": categories,
    }

    def detections() -> Iterator[list[dict]]:
        for index, (image, anns) in enumerate(zip(images, annotations)):
            rng = np.random.default_rng([seed, 2, index])
            yield _image_detections(rng, image, anns, dets_per_image, cat_log_w)

    return gt, detections()
