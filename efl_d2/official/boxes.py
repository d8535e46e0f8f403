"""Test-time box arithmetic of the official EFL code (ModelTC United-Perception), on Detectron2 boxes.

United-Perception (UP) stores boxes as inclusive pixel indices, the legacy "+1" convention: x2 is
the last pixel and a width is x2 - x1 + 1. A Detectron2 box is continuous: its x2 is UP's x2 + 1.
efl_d2 keeps Detectron2 boxes everywhere; these functions reproduce what UP computes on its own
boxes, so that :class:`~efl_d2.official.OfficialATSS` gives the official release's detections.
All boxes are (N, 4) XYXY tensors in pixels.
"""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import nms

__all__ = ["OFFICIAL_NMS_CLASS_OFFSET", "clip_inclusive_", "official_nms", "rescale_inclusive"]

# UP's class-aware NMS shifts the boxes of class k (1-based) by k * 4096 and runs one NMS.
OFFICIAL_NMS_CLASS_OFFSET = 4096.0


def clip_inclusive_(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip in place as UP clips its inclusive boxes to [0, w - 1] x [0, h - 1].

    For a Detectron2 box that is x1 in [0, w - 1] and x2 in [1, w] (y likewise), so a box outside
    the image keeps a 1-pixel extent instead of becoming empty. With x2 >= 1, x2 - 1 is exact in
    floating point, so the UP values are recovered bit for bit.

    Args:
        boxes: (N, 4) Detectron2 boxes in the resized (network input) image.
        image_size: (h, w) of that image without padding.
    """
    h, w = image_size
    boxes[:, 0].clamp_(min=0, max=w - 1)
    boxes[:, 1].clamp_(min=0, max=h - 1)
    boxes[:, 2].clamp_(min=1, max=w)
    boxes[:, 3].clamp_(min=1, max=h)
    return boxes


def rescale_inclusive(
    boxes: Tensor, input_size: tuple[int, int], output_size: tuple[int, int]
) -> Tensor:
    """Map boxes from the network input to the original image as UP's result dump does.

    UP divides its inclusive corners by the per-axis resize factors (input side / original side)
    and writes width x2 - x1 + 1 in original pixels; as a Detectron2 box that is
    ``x1 / f_x`` and ``(x2 - 1) / f_x + 1``: 1 - 1/f_x pixel narrower than Detectron2's scaling
    of x2 when the image was enlarged. No clipping to the original image, nothing dropped.

    Args:
        boxes: (N, 4) Detectron2 boxes in the input image (not modified).
        input_size: (h, w) of the resized, unpadded input image.
        output_size: (H, W) of the original image.

    Returns:
        (N, 4) Detectron2 boxes in original-image pixels.
    """
    factor_y = input_size[0] / output_size[0]
    factor_x = input_size[1] / output_size[1]
    out = boxes.clone()
    out[:, 0] = boxes[:, 0] / factor_x
    out[:, 1] = boxes[:, 1] / factor_y
    out[:, 2] = (boxes[:, 2] - 1) / factor_x + 1
    out[:, 3] = (boxes[:, 3] - 1) / factor_y + 1
    return out


def official_nms(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    iou_threshold: float,
    *,
    plus_one: bool,
    class_offset: float = OFFICIAL_NMS_CLASS_OFFSET,
) -> Tensor:
    """UP's class-aware NMS over all classes at once.

    The inclusive boxes of class c (0-based here, c + 1 in UP) are shifted by
    (c + 1) * ``class_offset`` in the boxes' dtype, as UP does: in float32 the shift rounds the
    coordinates of high class ids (to 0.5 px from UP class id 1024 on), which can flip decisions
    near the threshold, so it is reproduced rather than replaced by an exact per-class NMS. One
    torchvision NMS (a box is suppressed by a higher-scoring one with IoU > ``iou_threshold``).

    Args:
        boxes: (N, 4) Detectron2 boxes with x2, y2 >= 1 (e.g. after :func:`clip_inclusive_`).
        scores: (N,); classes: (N,) int, 0-based.
        plus_one: IoU with UP's widths x2 - x1 + 1 of the inclusive boxes (this equals
            Detectron2's IoU of the continuous boxes up to rounding); False: widths x2 - x1 of
            the inclusive boxes, as UP 0.1.0, i.e. IoU of the boxes 1 px narrower and lower.

    Returns:
        int64 indices of the kept boxes, by decreasing score.
    """
    shift = (classes.to(boxes.dtype) + 1) * class_offset
    inclusive = boxes.clone()
    inclusive[:, 2:] -= 1
    shifted = inclusive + shift[:, None]
    if plus_one:
        shifted[:, 2:] += 1  # IoU(a, b) with widths x2 - x1 + 1 == plain IoU with x2 + 1
    return nms(shifted, scores, iou_threshold)
