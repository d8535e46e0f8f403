"""The OpenImages Challenge 2019 detection metric, exact to the official evaluator
(``OpenImagesChallengeEvaluator`` of the TensorFlow Object Detection API, box mode), and the EFL
paper's AP1-AP5 groups.

Per image, the classes that count are its verified image-level labels (positive or negative) and
the classes of its boxes; detections of other classes, and of images without any ground truth, are
ignored. Per image and class, the detections (degenerate boxes removed, sorted by score with the
official code's ``np.argsort(scores)[::-1]``, at most 10,000) are matched:

1. to the non-group-of box of largest IoU, a true positive if IoU >= 0.5 and that box is not taken
   yet (no second choice);
2. those that are still not true positives, to the group-of box of largest IoA (the share of the
   detection inside it), if >= 0.5: each group-of box that got any counts once, as one true
   positive scored with the best of them, and those detections leave the list.

Per class, AP is VOC's area under the monotone precision/recall curve over all points, with the
number of boxes (group-of ones included) as the ground truth; classes without ground truth have
AP NaN and mAP is the mean over the others. The ground truth is the hierarchy-expanded one; the
detections are not expanded (the challenge leaves that to the detector: a parent class is scored
on the detections of that class).

AP1-AP5 (EFL paper, Table 7, after EQL / EQLv2): the classes sorted by training instances and cut
into five equal groups, AP_k the mean AP of group k (AP1 the rarest). The rules and the
side-by-side check against the official code: docs/openimages_metric.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from detectron2.evaluation import DatasetEvaluator

__all__ = [
    "OpenImagesDetections",
    "OpenImagesEvaluator",
    "OpenImagesGroundTruth",
    "average_precision",
    "expand_detections",
    "ground_truth_from_files",
    "group_aps",
    "instance_count_groups",
    "read_predictions",
    "score_openimages",
]

_MAX_DETECTIONS = 10000  # per image and class, as the official non-suppressing "NMS"


@dataclass
class OpenImagesGroundTruth:
    """Expanded ground truth of the images evaluated.

    ``image_ids`` in any order; ``box_*`` (B,) / (B, 4) and ``label_*`` (L,) rows index into them.
    Boxes: normalised ``[YMin, XMin, YMax, XMax]`` float64, in file order (the official code
    matches ties to the first box). Labels: the verified classes of each image (positive or
    negative: both make a class count there).
    """

    num_classes: int
    image_ids: list[str]
    box_image: np.ndarray
    box_label: np.ndarray
    boxes: np.ndarray
    box_group_of: np.ndarray
    label_image: np.ndarray
    label_label: np.ndarray


@dataclass
class OpenImagesDetections:
    """Detections: ``image_ids`` (D,) str, ``label`` (D,) int class index, ``score`` (D,) float64,
    ``boxes`` (D, 4) normalised ``[YMin, XMin, YMax, XMax]``; in the order they were produced
    (file order: the official code's order before its per-image sort)."""

    image_ids: list[str]
    label: np.ndarray
    score: np.ndarray
    boxes: np.ndarray


def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection areas, with the official code's operations in its order."""
    y0a, x0a, y1a, x1a = np.split(a, 4, axis=1)
    y0b, x0b, y1b, x1b = np.split(b, 4, axis=1)
    heights = np.maximum(
        np.zeros((len(a), len(b))), np.minimum(y1a, y1b.T) - np.maximum(y0a, y0b.T)
    )
    widths = np.maximum(np.zeros((len(a), len(b))), np.minimum(x1a, x1b.T) - np.maximum(x0a, x0b.T))
    return heights * widths


def _match(
    boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray, group_of: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, tp) of one image and class: the official two-stage matching.

    Args:
        boxes, scores: the class's detections of the image, valid, in production order.
        gt, group_of: the class's boxes of the image, in file order.
    """
    keep = scores > -10.0
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(scores)[::-1][:_MAX_DETECTIONS]
    boxes, scores = boxes[order], scores[order]
    n = len(scores)
    if len(gt) == 0:
        return scores, np.zeros(n)
    plain, groups = gt[~group_of], gt[group_of]
    tp = np.zeros(n, dtype=bool)
    if len(plain):
        inter = _intersection(boxes, plain)
        iou = inter / (_area(boxes)[:, None] + _area(plain)[None, :] - inter)
        best = np.argmax(iou, axis=1)
        taken = np.zeros(len(plain), dtype=bool)
        for i in range(n):
            g = best[i]
            if iou[i, g] >= threshold and not taken[g]:
                tp[i] = taken[g] = True
    in_group = np.zeros(n, dtype=bool)
    group_scores = np.zeros(len(groups))
    if len(groups):
        ioa = (_intersection(groups, boxes) / _area(boxes)[None, :]).T
        best = np.argmax(ioa, axis=1)
        for i in range(n):
            g = best[i]
            if not tp[i] and ioa[i, g] >= threshold:
                in_group[i] = True
                group_scores[g] = max(group_scores[g], scores[i])
        group_scores = group_scores[group_scores > 0]
    return (
        np.concatenate([scores[~in_group], group_scores]),
        np.concatenate([tp[~in_group].astype(float), np.ones(len(group_scores))]),
    )


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """The official ``compute_precision_recall`` + ``compute_average_precision`` (VOC, all
    points): NaN without ground truth, 0 without detections."""
    if num_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(scores)[::-1]
    hits = tp[order]
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum((hits <= 0).astype(float))
    precision = cum_tp.astype(float) / (cum_tp + cum_fp)
    recall = cum_tp.astype(float) / num_gt
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def _rows_by(keys: np.ndarray, n: int) -> list[np.ndarray]:
    """Row indices of each key 0..n-1, each in row order."""
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n + 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(n)]


def score_openimages(
    gt: OpenImagesGroundTruth, dets: OpenImagesDetections, *, iou_threshold: float = 0.5
) -> dict:
    """Per-class AP and mAP of ``dets`` on ``gt``.

    Returns:
        dict with ``AP`` (C,) float64 (NaN: no ground truth), ``num_gt`` (C,) int64,
        ``num_tp`` (C,) float64 and ``mAP`` (float, NaN if no class has ground truth).
    """
    c = gt.num_classes
    order = sorted(range(len(gt.image_ids)), key=gt.image_ids.__getitem__)  # the official order
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    n_img = len(order)
    box_rows = _rows_by(rank[gt.box_image], n_img)
    label_rows = _rows_by(rank[gt.label_image], n_img)
    index = {gt.image_ids[i]: int(rank[i]) for i in range(n_img)}
    det_img = np.asarray([index.get(i, -1) for i in dets.image_ids], dtype=np.int64)
    known = det_img >= 0
    det_rows = _rows_by(det_img[known], n_img)
    det_index = np.flatnonzero(known)

    num_gt = np.bincount(gt.box_label, minlength=c).astype(np.int64)
    per_class_scores: list[list[np.ndarray]] = [[] for _ in range(c)]
    per_class_tp: list[list[np.ndarray]] = [[] for _ in range(c)]
    for k in range(n_img):
        rows = det_index[det_rows[k]]
        if not len(rows):
            continue
        b_rows = box_rows[k]
        countable = np.union1d(gt.label_label[label_rows[k]], gt.box_label[b_rows])
        rows = rows[np.isin(dets.label[rows], countable)]
        boxes = dets.boxes[rows]
        valid = (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])
        rows, boxes = rows[valid], boxes[valid]
        labels, scores = dets.label[rows], dets.score[rows]
        for cls in np.unique(labels):
            mine = labels == cls
            gt_mine = gt.box_label[b_rows] == cls
            s, t = _match(
                boxes[mine],
                scores[mine],
                gt.boxes[b_rows][gt_mine],
                gt.box_group_of[b_rows][gt_mine],
                iou_threshold,
            )
            if len(s):
                per_class_scores[cls].append(s)
                per_class_tp[cls].append(t)
    ap = np.full(c, np.nan)
    num_tp = np.zeros(c)
    for cls in range(c):
        if num_gt[cls] == 0:
            continue
        if per_class_scores[cls]:
            s, t = np.concatenate(per_class_scores[cls]), np.concatenate(per_class_tp[cls])
        else:
            s, t = np.zeros(0), np.zeros(0)
        num_tp[cls] = t.sum()
        ap[cls] = average_precision(s, t, int(num_gt[cls]))
    # np.nanmean as the official code (its summation order, not a mean of the compacted array)
    mean = float(np.nanmean(ap)) if (~np.isnan(ap)).any() else float("nan")
    return {"AP": ap, "num_gt": num_gt, "num_tp": num_tp, "mAP": mean}


def instance_count_groups(instance_counts, num_groups: int = 5) -> np.ndarray:
    """(C,) group 0..num_groups-1 of every class: the classes sorted by training instances
    (ties by class index) and cut into ``num_groups`` groups of equal size (the first ones one
    larger when C does not divide), group 0 the rarest."""
    counts = np.asarray(instance_counts)
    order = np.argsort(counts, kind="stable")
    groups = np.empty(len(counts), dtype=np.int64)
    for g, part in enumerate(np.array_split(order, num_groups)):
        groups[part] = g
    return groups


def read_predictions(path: str, mids) -> OpenImagesDetections:
    """A predictions CSV in the challenge's format (ImageID, LabelName, Score, XMin, XMax, YMin,
    YMax; normalised coordinates), in file order."""
    import csv

    from ..data.openimages import _columns

    index = {m: i for i, m in enumerate(mids)}
    image_ids, label, score, coords = [], [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        ci, cl, cs, x0, x1, y0, y1 = _columns(
            header, path, ("ImageID", "LabelName", "Score", "XMin", "XMax", "YMin", "YMax")
        )
        for row in reader:
            if row[cl] not in index:
                raise ValueError(f"{path}: LabelName {row[cl]!r} is not a class")
            image_ids.append(row[ci])
            label.append(index[row[cl]])
            score.append(float(row[cs]))
            coords += (float(row[y0]), float(row[x0]), float(row[y1]), float(row[x1]))
    return OpenImagesDetections(
        image_ids=image_ids,
        label=np.asarray(label, dtype=np.int64),
        score=np.asarray(score, dtype=np.float64),
        boxes=np.asarray(coords, dtype=np.float64).reshape(-1, 4),
    )


def ground_truth_from_files(
    boxes_csv: str, labels_csv: str, mids, hierarchy=None
) -> OpenImagesGroundTruth:
    """The (hierarchy-expanded, if ``hierarchy`` is a :class:`ClassHierarchy`) ground truth of
    a box CSV and an image-level label CSV."""
    from ..data.openimages import read_split

    image_ids, boxes, labels = read_split(boxes_csv, labels_csv, mids, hierarchy)
    return OpenImagesGroundTruth(
        num_classes=len(mids),
        image_ids=image_ids,
        box_image=boxes.image,
        box_label=boxes.label,
        boxes=boxes.boxes,
        box_group_of=boxes.group_of,
        label_image=labels.image,
        label_label=labels.label,
    )


def expand_detections(dets: OpenImagesDetections, ancestors) -> OpenImagesDetections:
    """Every detection, then a copy (same box and score) for each ancestor of its class: what a
    challenge submission does for a detector that outputs leaf classes only."""
    from ..data.openimages import expansion_rows

    rows, label = expansion_rows(np.asarray(dets.label), ancestors)
    return OpenImagesDetections(
        [dets.image_ids[r] for r in rows],
        label.astype(np.int64),
        dets.score[rows],
        dets.boxes[rows],
    )


def group_aps(ap: np.ndarray, groups: np.ndarray, num_groups: int = 5) -> list[float]:
    """Mean AP of each group of classes (NaN APs left out, NaN for a group without AP)."""
    out = []
    for g in range(num_groups):
        values = ap[(groups == g) & ~np.isnan(ap)]
        out.append(float(values.mean()) if len(values) else float("nan"))
    return out


class OpenImagesEvaluator(DatasetEvaluator):
    """Detectron2 ``DatasetEvaluator`` of the OpenImages Challenge 2019 metric on a registered
    OpenImages dataset (``efl_d2.data.openimages``): mAP@0.5 (``AP``) and the EFL paper's
    ``AP1`` ... ``AP5``, in percent, plus ``AP-<class>``.

    Args:
        dataset_name: e.g. "oid_challenge_2019_val" or "mini_openimages_val".
        expand_detections: also give every detection to each ancestor of its class (for a
            detector trained on leaf classes only); the challenge metric itself does not.
        output_dir: where to write ``openimages_predictions.csv`` (the challenge format).
    """

    def __init__(self, dataset_name: str, *, expand_detections: bool = False, output_dir=None):
        from detectron2.data import MetadataCatalog

        self.dataset_name = dataset_name
        self.meta = MetadataCatalog.get(dataset_name)
        if getattr(self.meta, "evaluator_type", None) != "openimages":
            raise ValueError(f"{dataset_name!r} is not an OpenImages dataset")
        self.expand = bool(expand_detections)
        self.output_dir = output_dir
        self.reset()

    def reset(self) -> None:
        self._rows: list[tuple] = []  # (image_id, label, score, ymin, xmin, ymax, xmax)
        self._images: list[str] = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            self._images.append(inp["image_id"])
            inst = out["instances"].to("cpu")
            if not len(inst):
                continue
            h, w = inp["height"], inp["width"]
            b = inst.pred_boxes.tensor.double().numpy()
            cols = np.stack([b[:, 1] / h, b[:, 0] / w, b[:, 3] / h, b[:, 2] / w], axis=1)
            for cls, score, box in zip(
                inst.pred_classes.tolist(), inst.scores.double().tolist(), cols.tolist()
            ):
                self._rows.append((inp["image_id"], cls, score, *box))

    def evaluate(self) -> dict:
        import itertools
        import logging
        import os

        from detectron2.utils import comm

        from ..data.openimages import (
            check_openimages_files,
            openimages_paths,
            read_class_descriptions,
            read_hierarchy,
        )

        comm.synchronize()
        rows = list(itertools.chain(*comm.gather(self._rows, dst=0)))
        images = set(itertools.chain(*comm.gather(self._images, dst=0)))
        if not comm.is_main_process():
            return {}
        paths = openimages_paths(self.meta.dataset_root, self.meta.split)
        check_openimages_files(paths)
        mids, _ = read_class_descriptions(paths["classes"])
        hierarchy = read_hierarchy(paths["hierarchy"])
        gt = _restrict(
            ground_truth_from_files(paths["boxes"], paths["labels"], mids, hierarchy), images
        )
        dets = OpenImagesDetections(
            image_ids=[r[0] for r in rows],
            label=np.asarray([r[1] for r in rows], dtype=np.int64),
            score=np.asarray([r[2] for r in rows], dtype=np.float64),
            boxes=np.asarray([r[3:] for r in rows], dtype=np.float64).reshape(-1, 4),
        )
        if self.expand:
            dets = expand_detections(dets, hierarchy.index_lists(mids)[0])
        if self.output_dir:
            _write_predictions(
                os.path.join(self.output_dir, "openimages_predictions.csv"), dets, mids
            )
        result = score_openimages(gt, dets)
        from ..data.openimages import category_instance_counts_openimages

        groups = instance_count_groups(category_instance_counts_openimages(self.dataset_name))
        names = self.meta.thing_classes
        bbox = {"AP": 100 * result["mAP"]}
        bbox.update({f"AP{g + 1}": 100 * v for g, v in enumerate(group_aps(result["AP"], groups))})
        bbox.update(
            {
                f"AP-{names[k]}": 100 * float(v)
                for k, v in enumerate(result["AP"])
                if not np.isnan(v)
            }
        )
        logging.getLogger(__name__).info(
            f"OpenImages {self.dataset_name}: {len(images)} images, {len(dets.label)} detections, "
            + ", ".join(f"{k} {bbox[k]:.2f}" for k in ("AP", "AP1", "AP2", "AP3", "AP4", "AP5"))
        )
        return {"bbox": bbox}


def _restrict(gt: OpenImagesGroundTruth, images: set) -> OpenImagesGroundTruth:
    """The ground truth of the evaluated images only (a subset run scores its own images)."""
    keep_img = np.asarray([i in images for i in gt.image_ids], dtype=bool)
    new_index = np.cumsum(keep_img) - 1
    box = keep_img[gt.box_image]
    lab = keep_img[gt.label_image]
    return OpenImagesGroundTruth(
        num_classes=gt.num_classes,
        image_ids=[i for i, k in zip(gt.image_ids, keep_img) if k],
        box_image=new_index[gt.box_image[box]],
        box_label=gt.box_label[box],
        boxes=gt.boxes[box],
        box_group_of=gt.box_group_of[box],
        label_image=new_index[gt.label_image[lab]],
        label_label=gt.label_label[lab],
    )


def _write_predictions(path: str, dets: OpenImagesDetections, mids) -> None:
    import csv
    import io

    from .._atomic import atomic_write

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["ImageID", "LabelName", "Score", "XMin", "XMax", "YMin", "YMax"])
    for img, cls, score, (y0, x0, y1, x1) in zip(
        dets.image_ids, dets.label.tolist(), dets.score.tolist(), dets.boxes.tolist()
    ):
        writer.writerow([img, mids[cls], repr(score), repr(x0), repr(x1), repr(y0), repr(y1)])
    atomic_write(path, lambda f: f.write(buf.getvalue()), mode="w")
