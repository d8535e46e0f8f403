"""Run a LazyConfig model on single images (detectron2's ``DefaultPredictor`` is yacs-only)."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_image_to_rgb
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from omegaconf import OmegaConf
from PIL import Image

from ..data.image_io import read_image

__all__ = [
    "LazyPredictor",
    "image_to_rgb",
    "instances_to_records",
    "metadata_from_config",
    "read_image_file",
    "resize_to_test_size",
    "to_image_pixels",
]

# Test-time augmentations that treat every channel alike (resizes; the official
# OpenCVResizeShortestEdge is a ResizeShortestEdge): they may run on an image in either channel
# order.
_CHANNELWISE_AUGMENTATIONS = (T.ResizeShortestEdge, T.Resize, T.ResizeScale)


def _test_mapper(cfg):
    return OmegaConf.select(cfg, "dataloader.test.mapper", default=None)


def _memory_order(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """``image``, or its channel-reversed view when that one is C-contiguous (``read``'s BGR is a
    reversed view of the decoded RGB), and whether it is the reversed view. PIL's
    ``Image.fromarray`` and OpenCV copy an array of any other layout whole before resizing it."""
    if image.ndim == 3 and not image.flags.c_contiguous:
        reversed_view = image[:, :, ::-1]
        if reversed_view.flags.c_contiguous:
            return reversed_view, True
    return image, False


def _shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W, C) uint8 image resized to ``size`` (height, width) with PIL's antialiased
    bilinear filter, in its memory order (a channel-reversed view is resized as stored and the
    small result reversed): no full-size copy beyond the one PIL holds while resizing."""
    source, reversed_ = _memory_order(image)
    pil = Image.fromarray(np.ascontiguousarray(source))
    out = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))
    return out[:, :, ::-1] if reversed_ else out


def resize_to_test_size(image: np.ndarray, augmentations: list[T.Augmentation]) -> torch.Tensor:
    """The model's input for an (H, W, C) uint8 image: the test-time ``augmentations`` (the
    resize to the test size), then a (C, h, w) float32 tensor. The pre-processing of
    :class:`LazyPredictor` and of the exported models (:mod:`efl_d2.export`), whose graphs start
    at the test size.

    The resize runs first, on the uint8 image: no full-size float array is made, and when the
    augmentations are resizes no full-size copy either, besides the one PIL holds while
    resizing (resizes treat channels alike, so a channel-reversed view such as
    :meth:`LazyPredictor.read`'s BGR is resized in its memory order and only the test-size result
    is reversed; the pixels are those of resizing it in either order).
    """
    channelwise = all(isinstance(a, _CHANNELWISE_AUGMENTATIONS) for a in augmentations)
    source, reversed_ = _memory_order(image) if channelwise else (image, False)
    aug_input = T.AugInput(np.ascontiguousarray(source))
    T.AugmentationList(augmentations)(aug_input)
    resized = aug_input.image[:, :, ::-1] if reversed_ else aug_input.image
    return torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))


def to_image_pixels(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    test_size: tuple[int, int],
    image_size: tuple[int, int],
) -> Instances:
    """Detections made at the test size as Instances in the pixels of the original image, by
    detectron2's ``detector_postprocess``: the function with which the PyTorch detectors
    (``DenseDetector.forward``) rescale their own detections (scale per axis, clip to the image,
    drop empty boxes). The exported models' detections go through it outside the graph.

    Args:
        boxes (N, 4) XYXY, scores (N,), classes (N,): in the pixels of the resized image.
        test_size: (h, w) of the resized image; image_size: (H, W) of the original image.
    """
    instances = Instances(
        tuple(test_size), pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes
    )
    return detector_postprocess(instances, *image_size)


def read_image_file(path: str, input_format: str) -> np.ndarray:
    """Read an image file for a model as an (H, W, C) uint8 array in ``input_format``, EXIF
    orientation applied, with :func:`efl_d2.data.image_io.read_image`: the pixels of
    detectron2's ``read_image`` for 8-bit images, 16-bit greyscale mapped to 8 bits. For "RGB"
    and "BGR" the full-size image is held once (BGR is a channel-reversed view of the decoded RGB
    array). What :meth:`LazyPredictor.read` and the exported models' ``read``
    (:class:`efl_d2.export.ExportedModel`) run, so both predict from the same pixels.

    Raises:
        RuntimeError: naming the file, if it cannot be read (missing, not an image, cut short,
            or a mode that is refused, such as 32-bit float).
    """
    try:
        return read_image(path, format=input_format)
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad files, and ours
        raise RuntimeError(f"Cannot read image {path!r}: {e}") from e


def image_to_rgb(
    image: np.ndarray, input_format: str, size: tuple[int, int] | None = None
) -> np.ndarray:
    """An image read in ``input_format`` as RGB (for ``Visualizer``).

    Args:
        size: (height, width) to shrink it to first (PIL's antialiased bilinear filter),
            e.g. to draw a huge image on a smaller canvas; the resize runs on the image as
            stored, so no full-size copy of it is kept. Default: the image's own size.
    """
    if size is None or tuple(size) == tuple(image.shape[:2]):
        return convert_image_to_rgb(image, input_format)
    if input_format in ("RGB", "BGR"):
        return convert_image_to_rgb(_shrink(image, size), input_format)
    return _shrink(convert_image_to_rgb(image, input_format), size)


class LazyPredictor:
    """Pre-process one image as the config's test mapper does, run the model, return Instances.

    Memory follows the test size, not the image's: the image is read once as uint8 and resized to
    the test size before anything else (:meth:`preprocess`); the float tensor, the model's work
    and the boxes are at the test size (boxes are scaled back to the image's pixels by the model's
    post-processing). A 4000x4000 image costs about its uint8 size (48 MB) plus the transient
    copy PIL makes to decode or resize it.

    Example::

        cfg = model_zoo.get_config("mini_lvis/fcos_R18.py")
        predictor = LazyPredictor(cfg, model_zoo.get("mini_lvis/fcos_R18.py", weights=ckpt))
        instances = predictor("image.jpg")
    """

    def __init__(self, cfg, model: torch.nn.Module):
        """
        Args:
            cfg: the LazyConfig the model was built from; ``dataloader.test.mapper`` gives the
                test-time resize and channel order (default: short side 800, max 1333, BGR).
            model: a detectron2 model taking ``[{"image", "height", "width"}]``.
        """
        self.cfg = cfg
        self.model = model.eval()
        mapper = _test_mapper(cfg)
        if mapper is not None and "augmentations" in mapper:
            augmentations = list(instantiate(mapper.augmentations))
        else:
            augmentations = [T.ResizeShortestEdge(800, 1333)]
        self.augmentations = T.AugmentationList(augmentations)
        fmt = mapper.get("image_format", None) if mapper is not None else None
        self.input_format = fmt or getattr(model, "input_format", "BGR")
        #: (height, width) the last image was resized to for the model (the test size); None
        #: before the first call
        self.test_size: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, image: str | np.ndarray, image_format: str | None = None) -> Instances:
        """
        Args:
            image: a file path, or an (H, W, 3) uint8 array.
            image_format: channel order of an array ("BGR" as OpenCV, or "RGB"); default the
                model's input format.

        Returns:
            Instances in original-image coordinates, on the CPU, sorted by decreasing score.
        """
        if isinstance(image, str):
            image = self.read(image)
        elif image_format is not None and image_format != self.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        tensor = self.preprocess(image)
        self.test_size = (int(tensor.shape[1]), int(tensor.shape[2]))
        outputs = self.model([{"image": tensor.to(self.device), "height": height, "width": width}])
        return outputs[0]["instances"].to("cpu")

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """The model's input for an (H, W, C) uint8 image in :attr:`input_format`: the config's
        test-time augmentations (the resize to the test size), then a (C, h, w) float32 tensor
        (:func:`resize_to_test_size`)."""
        return resize_to_test_size(image, self.augmentations.augs)

    def read(self, path: str) -> np.ndarray:
        """Read an image file as an (H, W, C) uint8 array in :attr:`input_format`
        (:func:`read_image_file`).

        Raises:
            RuntimeError: naming the file, if it cannot be read.
        """
        return read_image_file(path, self.input_format)

    def to_rgb(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """An image read in :attr:`input_format` as RGB, shrunk to ``size`` (height, width) if
        given (:func:`image_to_rgb`)."""
        return image_to_rgb(image, self.input_format, size)


def metadata_from_config(cfg, fallback: str | None = None):
    """``MetadataCatalog`` entry of the config's (first) test dataset with class names, else of its
    training dataset, else of ``fallback``.

    Raises:
        ValueError: if neither has ``thing_classes`` (class names are needed to label boxes).
    """
    names = []
    for split in ("test", "train"):  # a model predicts the classes it was trained on
        given = OmegaConf.select(cfg, f"dataloader.{split}.dataset.names", default=None)
        names += [given] if isinstance(given, str) else list(given or [])
    for name in [*names, fallback]:
        if name and hasattr(MetadataCatalog.get(name), "thing_classes"):
            return MetadataCatalog.get(name)
    raise ValueError(
        f"No class names: the config's test dataset {list(names)} (and fallback {fallback!r}) has "
        "no thing_classes metadata. Register the dataset (mini-LVIS: `import efl_d2` with "
        "DETECTRON2_DATASETS pointing at its root) or pass a dataset name whose metadata has them."
    )


def instances_to_records(instances: Instances, class_names=None) -> list[dict]:
    """Detections as JSON-ready dicts: ``bbox`` [x, y, w, h] (pixels, original image),
    ``score``, ``category_id`` (contiguous 0..C-1) and ``category_name`` when names are given."""
    boxes = instances.pred_boxes.tensor.tolist() if len(instances) else []
    scores = instances.scores.tolist() if len(instances) else []
    classes = instances.pred_classes.tolist() if len(instances) else []
    records = []
    for (x0, y0, x1, y1), score, cls in zip(boxes, scores, classes):
        rec = {"bbox": [x0, y0, x1 - x0, y1 - y0], "score": score, "category_id": int(cls)}
        if class_names is not None:
            rec["category_name"] = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
        records.append(rec)
    return records
