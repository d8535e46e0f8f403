"""ATSS as one traceable function of one image: the module that ONNX and TorchScript export."""

import torch
from torch import Tensor, nn
from torchvision.ops import nms

from ..modeling.atss import ATSS

__all__ = ["ExportableATSS", "class_offset_nms"]


def class_offset_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float
) -> Tensor:
    """
    Class-aware NMS as a single ``torchvision.ops.nms``: the boxes of class c are shifted by
    c x (largest coordinate + 1), so boxes of different classes never overlap.

    This is the "coordinate trick" of torchvision's ``batched_nms`` (same offsets, same float32
    arithmetic), which ``batched_nms`` takes while tracing but replaces by a loop over classes in
    eager mode above 1000 boxes on CPU (25,000 on GPU). Taking it always makes the eager, traced and ONNX forms
    one computation; the shift rounds coordinates to the float32 grid of the shifted values,
    which can flip an IoU lying within ~1e-5 of the threshold (``docs/export.md`` has the
    measured effect).

    Args:
        boxes: (N, 4) XYXY, clipped to the image (>= 0); scores: (N,); classes: (N,) int64.

    Returns:
        int64 indices of the kept boxes, by decreasing score.
    """
    # The appended 0 leaves the maximum of clipped boxes as it is and defines it for N = 0,
    # without a branch on N in the graph.
    extent = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max() + 1
    return nms(boxes + classes.to(boxes.dtype)[:, None] * extent, scores, iou_threshold)


class ExportableATSS(nn.Module):
    """
    :class:`~efl_d2.modeling.ATSS` inference on one image, as tensors in and out: the model's own
    normalisation and padding, backbone, head, candidates (:meth:`ATSS.pre_nms_candidates`), then
    :func:`class_offset_nms` and the best ``max_detections_per_image``. Traceable: candidate
    counts, padding and clipping follow the image's (symbolic) size.

    The resize to the test size before and the rescaling of the boxes to the original image after
    are outside, shared with the PyTorch predictor
    (:func:`efl_d2.model_zoo.predictor.resize_to_test_size`,
    :func:`~efl_d2.model_zoo.predictor.to_image_pixels`).
    """

    def __init__(self, model: ATSS):
        """
        Args:
            model: an ATSS (not a subclass: PAA's score voting and the official conventions of
                ``OfficialATSS`` change the post-processing), put in eval mode.
        """
        super().__init__()
        if type(model) is not ATSS:
            raise ValueError(
                f"Only ATSS models export so far; got {type(model).__name__} (PAA, RetinaNet, "
                "FCOS and the official conventions come later)."
            )
        self.model = model
        self.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            image: (3, h, w) float32 in the model's input format, resized to the test size.

        Returns:
            boxes: (N, 4) float32 XYXY in the pixels of ``image``, clipped to it.
            scores: (N,) float32, decreasing.
            classes: (N,) int64 in 0..C-1.
        """
        model = self.model
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        pred_logits, pred_deltas, pred_quality = model.transposed_predictions(model.head(features))
        scores = [model.predict_scores(x[0], q[0]) for x, q in zip(pred_logits, pred_quality)]
        candidates = model.pre_nms_candidates(
            model.anchor_generator(features),
            scores,
            [x[0] for x in pred_deltas],
            images.image_sizes[0],
        )
        boxes = candidates.pred_boxes.tensor
        keep = class_offset_nms(
            boxes, candidates.scores, candidates.pred_classes, model.test_nms_thresh
        )
        keep = keep[: model.max_detections_per_image]
        return boxes[keep], candidates.scores[keep], candidates.pred_classes[keep]
