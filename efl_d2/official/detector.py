"""``OfficialATSS``: ATSS computing what the official EFL code computes around the network."""

from __future__ import annotations

from detectron2.structures import Boxes, ImageList, Instances

from ..modeling.atss import ATSS
from .boxes import clip_inclusive_, official_nms, rescale_inclusive

__all__ = ["BOX_CONVENTIONS", "NMS_CONVENTIONS", "OfficialATSS"]

# "detectron2": Boxes.clip to [0, w] and detector_postprocess (which drops empty boxes).
# "official": clip_inclusive_ and rescale_inclusive, nothing dropped.
BOX_CONVENTIONS = ("detectron2", "official")
# "detectron2": batched_nms. "official": official_nms without "+1", as UP 0.1.0 (the release that
# trained the official weights calls torchvision's nms). "official_plus_one": with the "+1" IoU
# (UP from the 2022-01 rename to ``up`` on).
NMS_CONVENTIONS = ("detectron2", "official", "official_plus_one")


def _check(value: str, allowed: tuple, name: str) -> str:
    if value not in allowed:
        raise ValueError(f"OfficialATSS: {name} must be one of {allowed}, got {value!r}")
    return value


class OfficialATSS(ATSS):
    """
    :class:`ATSS` with the official code's input normalisation, test-time clipping, NMS and
    rescaling to the input image (:mod:`efl_d2.official.boxes`); with the default arguments it
    is exactly ATSS. LazyConfig only: :func:`efl_d2.official.official_architecture` and
    :func:`efl_d2.official.official_inference` switch an ATSS config to it.
    """

    def __init__(
        self,
        *,
        pixel_divisor: float = 1.0,
        box_convention: str = "detectron2",
        nms_convention: str = "detectron2",
        **kwargs,
    ):
        """
        Args:
            pixel_divisor: images are divided by it before ``(x - pixel_mean) / pixel_std``
                (255 with mean/std on the [0, 1] scale computes exactly torchvision's
                ``to_tensor`` + ``normalize``, as the official code).
            box_convention: "detectron2" (clip to [0, w] x [0, h], detectron2's
                ``detector_postprocess``, which drops empty boxes) or "official" (the official
                inclusive-pixel clip to [0, w - 1] and rescaling, nothing dropped).
            nms_convention: "detectron2" (``batched_nms``), "official" (the release's
                class-offset NMS, no "+1") or "official_plus_one" (the same with "+1" widths, as
                the official code from 2022-01 on).
            kwargs: the :class:`ATSS` arguments.
        """
        super().__init__(**kwargs)
        self.pixel_divisor = float(pixel_divisor)
        self.box_convention = _check(box_convention, BOX_CONVENTIONS, "box_convention")
        self.nms_convention = _check(nms_convention, NMS_CONVENTIONS, "nms_convention")

    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        """:meth:`ATSS.preprocess_image` of the images divided by ``pixel_divisor``."""
        if self.pixel_divisor == 1.0:
            return super().preprocess_image(batched_inputs)
        divided = [
            {"image": self._move_to_current_device(x["image"]).float() / self.pixel_divisor}
            for x in batched_inputs
        ]
        return super().preprocess_image(divided)

    def forward(self, batched_inputs: list[dict]):
        """:meth:`ATSS.forward`; at inference with ``box_convention="official"`` the boxes are
        mapped to each input's ``height`` x ``width`` by :func:`rescale_inclusive` instead of
        ``detector_postprocess``."""
        if self.training or self.box_convention == "detectron2":
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        results = self.forward_inference(images, features, self.head(features))
        processed = []
        for result, inputs, image_size in zip(results, batched_inputs, images.image_sizes):
            output_size = (inputs.get("height", image_size[0]), inputs.get("width", image_size[1]))
            out = Instances(output_size, **result.get_fields())
            out.pred_boxes = Boxes(
                rescale_inclusive(result.pred_boxes.tensor, image_size, output_size)
            )
            processed.append({"instances": out})
        return processed

    def pre_nms_candidates(self, anchors, scores, deltas, image_size) -> Instances:
        """:meth:`ATSS.pre_nms_candidates`, clipped as the official code with
        ``box_convention="official"``."""
        pred = super().pre_nms_candidates(anchors, scores, deltas, image_size)
        if self.box_convention == "official":
            # ATSS clipped to [0, w] x [0, h]; clamping that again to the official ranges
            # ([0, w - 1] for x1, [1, w] for x2) equals clamping the unclipped boxes, exactly.
            clip_inclusive_(pred.pred_boxes.tensor, image_size)
        return pred

    def nms(self, candidates: Instances) -> Instances:
        """:meth:`ATSS.nms` with ``nms_convention``'s NMS."""
        if self.nms_convention == "detectron2":
            return super().nms(candidates)
        keep = official_nms(
            candidates.pred_boxes.tensor,
            candidates.scores,
            candidates.pred_classes,
            self.test_nms_thresh,
            plus_one=self.nms_convention == "official_plus_one",
        )
        return candidates[keep[: self.max_detections_per_image]]
