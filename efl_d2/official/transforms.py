"""The official EFL code's (United-Perception) keep-aspect-ratio resize, for training and test.

Detectron2's :class:`~detectron2.data.transforms.ResizeShortestEdge` computes a target size and
resizes with PIL. The official ``keep_ar_resize`` computes one factor
``f = min(S / short side, max_size / long side)`` and calls ``cv2.resize(fx=f, fy=f,
INTER_LINEAR)``: OpenCV then derives the output size by rounding ``h * f`` half to even
(584 x 512 at S = 800: 912 rows, where Detectron2 makes 913), samples the source at
``(x + 0.5) / f - 0.5`` and interpolates in fixed point. Weights trained that way see exactly
these pixels only through OpenCV, so :class:`OpenCVResizeShortestEdge` uses it (an optional
dependency: ``pip install opencv-python-headless``; the ``lvis`` package already installs
OpenCV).
"""

from __future__ import annotations

import sys

import numpy as np
from detectron2.data.transforms import (
    NoOpTransform,
    ResizeShortestEdge,
    ResizeTransform,
    Transform,
)

__all__ = ["OpenCVResizeShortestEdge", "OpenCVResizeTransform", "opencv_resized_shape"]


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            "OpenCVResizeTransform (the official EFL resize, used by the model zoo's trained=True "
            "config of the official release) needs OpenCV: pip install opencv-python-headless"
        ) from e
    return cv2


def opencv_resized_shape(h: int, w: int, scale: float) -> tuple[int, int]:
    """Output (height, width) of ``cv2.resize(img, None, fx=scale, fy=scale)`` for an h x w image.

    OpenCV rounds ``side * scale`` (double) to the nearest integer, halves to even (cvRound), as
    Python's :func:`round` does.
    """
    return round(h * scale), round(w * scale)


class OpenCVResizeTransform(Transform):
    """Resize by one factor for both axes with ``cv2.resize(fx=scale, fy=scale)``.

    Images: bilinear (``INTER_LINEAR``), segmentation maps: nearest. Coordinates are scaled by
    the real per-axis factors f_x = new_w / w and f_y = new_h / h (the official ``separate_wh``).
    """

    def __init__(self, h: int, w: int, scale: float, inclusive_boxes: bool = False):
        """
        Args:
            h, w: input image size (pixels).
            scale: the factor for both axes (output side ~ scale * input side).
            inclusive_boxes: scale boxes as the official code scales its inclusive-pixel boxes
                (x2 = last pixel): x1 * f_x, (x2 - 1) * f_x + 1 for a Detectron2 box, i.e.
                (f_x - 1) px narrower than plain scaling when enlarging. Points and polygons
                are always scaled plainly.
        """
        super().__init__()
        new_h, new_w = opencv_resized_shape(h, w, scale)
        self._set_attributes(locals())

    def _resize(self, img: np.ndarray, interpolation: int) -> np.ndarray:
        assert img.shape[:2] == (self.h, self.w), (img.shape, self.h, self.w)
        out = _cv2().resize(img, None, fx=self.scale, fy=self.scale, interpolation=interpolation)
        if out.shape[:2] != (self.new_h, self.new_w):
            raise RuntimeError(
                f"cv2.resize made {out.shape[:2]} from {img.shape[:2]} at scale {self.scale}, "
                f"expected {(self.new_h, self.new_w)}"
            )
        if img.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing channel axis of size 1
            out = out[:, :, None]
        return out

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """(h, w[, c]) array -> (new_h, new_w[, c]) array of the same dtype."""
        return self._resize(img, _cv2().INTER_LINEAR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._resize(segmentation, _cv2().INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """(N, 2) x, y in pixels of the input image -> of the output image."""
        coords[:, 0] = coords[:, 0] * (self.new_w / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h / self.h)
        return coords

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        """(N, 4) XYXY boxes in pixels of the input image -> of the output image."""
        if not self.inclusive_boxes:
            return super().apply_box(box)
        factors = np.array([self.new_w / self.w, self.new_h / self.h] * 2)
        out = np.asarray(box, dtype=np.float64) * factors
        out[:, 2:] = (box[:, 2:] - 1) * factors[2:] + 1
        return out

    def inverse(self) -> Transform:
        """Back to the input size (with Detectron2's PIL resize, for coordinates mainly)."""
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w)


class OpenCVResizeShortestEdge(ResizeShortestEdge):
    """:class:`ResizeShortestEdge` with the official factor and OpenCV resize.

    The factor is ``min(S / min(h, w), max_size / max(h, w))`` for a short side S drawn as
    ResizeShortestEdge draws it; the image goes through :class:`OpenCVResizeTransform`.
    Official EFL test setting: ``OpenCVResizeShortestEdge(800, 1333)``; training:
    ``short_edge_length=(640, 672, 704, 736, 768, 800), sample_style="choice"``,
    ``inclusive_boxes=True`` (see :class:`OpenCVResizeTransform`), after the flip.
    """

    def __init__(
        self,
        short_edge_length,
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        *,
        inclusive_boxes: bool = False,
    ):
        """Args: those of :class:`ResizeShortestEdge` (always bilinear);
        ``inclusive_boxes``: see :class:`OpenCVResizeTransform`."""
        super().__init__(short_edge_length, max_size, sample_style)
        self.inclusive_boxes = inclusive_boxes

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return NoOpTransform()
        scale = min(float(size) / min(h, w), float(self.max_size) / max(h, w))
        return OpenCVResizeTransform(h, w, scale, inclusive_boxes=self.inclusive_boxes)
