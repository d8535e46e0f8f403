"""Pre-NMS candidate selection of the dense detectors, per level.

The detectors' rule (Detectron2's and the official code's) keeps the top ``topk_candidates``
(anchor, class) pairs of a level over all classes. On LVIS that starves rare classes: a frequent
class's many near-duplicate anchors fill the quota, so over the whole dataset a rare class gets
far fewer than the 10,000 detections that AP-fixed (Dave et al. 2021) scores. The per-class rule
keeps the top ``topk_per_class`` anchors of every class instead.
"""

import torch
from detectron2.structures import Boxes, Instances
from torch import Tensor

__all__ = ["decode_candidates", "select_candidates", "topk_count"]


def topk_count(size: int | Tensor, k: int | Tensor) -> int | Tensor:
    """min(``size``, ``k``) for a ``size`` read from a tensor's shape.

    In eager mode a shape is Python ints and this is ``min``. While tracing, a shape is 0-dim
    tensors: the count stays a tensor (as in Detectron2's ``_decode_per_level_predictions``), so
    a traced or exported graph takes the count of each input's own size instead of the example's.
    """
    if isinstance(size, Tensor):
        return size.clamp(max=k)
    return min(size, k)


def select_candidates(
    scores: Tensor,
    *,
    score_thresh: float,
    topk_candidates: int | Tensor,
    topk_per_class: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """The candidates of one level with score > ``score_thresh``.

    Args:
        scores: (A, C) scores of A anchors.
        topk_candidates: with ``topk_per_class == 0``, the number of best (anchor, class) pairs
            over all classes (taken before the threshold: at threshold 0 nearly every pair passes
            and thresholding first would materialise all A x C of them); a 0-dim tensor while
            tracing (:func:`topk_count`).
        topk_per_class: > 0: the best ``topk_per_class`` anchors of every class instead.

    Returns:
        (scores (M,), anchor indices (M,), classes (M,)), by decreasing score (per class for the
        per-class rule).
    """
    num_anchors, num_classes = scores.shape
    if topk_per_class > 0:
        top, anchor_idxs = scores.topk(topk_count(num_anchors, topk_per_class), dim=0)  # (k, C)
        classes = torch.arange(num_classes, device=scores.device).expand_as(anchor_idxs)
        top, anchor_idxs, classes = (
            top.t().flatten(),
            anchor_idxs.t().flatten(),
            classes.t().flatten(),
        )
    else:
        top, flat_idxs = scores.flatten().topk(
            topk_count(num_anchors * num_classes, topk_candidates)
        )
        anchor_idxs, classes = flat_idxs // num_classes, flat_idxs % num_classes
    keep = top > score_thresh
    return top[keep], anchor_idxs[keep], classes[keep]


def decode_candidates(
    detector,
    anchors: Boxes,
    pred_scores: Tensor,
    pred_deltas: Tensor,
    score_thresh: float,
    topk_candidates: int,
    image_size: tuple[int, int],
) -> Instances:
    """The :func:`select_candidates` of one level as Instances with decoded boxes: efl_d2's
    ``DenseDetector._decode_per_level_predictions``. Same result as Detectron2's (the top
    ``topk_candidates`` (anchor, class) pairs with score > ``score_thresh``), but takes the top-k
    first; with ``detector.test_topk_per_class`` > 0 the top anchors of every class instead.

    Args:
        detector: has ``box2box_transform`` and ``test_topk_per_class`` (the per-class rule
            when > 0).
        anchors: Boxes (A, 4); pred_scores: (A, C); pred_deltas: (A, 4).
        score_thresh, topk_candidates: see :func:`select_candidates`.
        image_size: (h, w) of the Instances.
    """
    scores, anchor_idxs, classes = select_candidates(
        pred_scores,
        score_thresh=score_thresh,
        topk_candidates=topk_candidates,
        topk_per_class=detector.test_topk_per_class,
    )
    boxes = detector.box2box_transform.apply_deltas(
        pred_deltas[anchor_idxs], anchors.tensor[anchor_idxs]
    )
    return Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes)
