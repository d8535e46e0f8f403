"""Run a LazyConfig model on single images (detectron2's ``DefaultPredictor`` is yacs-only)."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_image_to_rgb, read_image
from detectron2.structures import Instances
from omegaconf import OmegaConf

__all__ = ["LazyPredictor", "instances_to_records", "metadata_from_config"]


def _test_mapper(cfg):
    return OmegaConf.select(cfg, "dataloader.test.mapper", default=None)


class LazyPredictor:
    """Pre-process one image as the config's test mapper does, run the model, return Instances.

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
            self.augmentations = T.AugmentationList(instantiate(mapper.augmentations))
        else:
            self.augmentations = T.AugmentationList([T.ResizeShortestEdge(800, 1333)])
        fmt = mapper.get("image_format", None) if mapper is not None else None
        self.input_format = fmt or getattr(model, "input_format", "BGR")

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
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        outputs = self.model([{"image": tensor.to(self.device), "height": height, "width": width}])
        return outputs[0]["instances"].to("cpu")

    def read(self, path: str) -> np.ndarray:
        """Read an image file as an (H, W, 3) uint8 array in :attr:`input_format`."""
        try:
            return read_image(path, format=self.input_format)
        except (OSError, SyntaxError, ValueError) as e:
            raise RuntimeError(f"Cannot read image {path!r}: {e}") from e

    def to_rgb(self, image: np.ndarray) -> np.ndarray:
        """An image read in :attr:`input_format` as RGB (for ``Visualizer``)."""
        return convert_image_to_rgb(image, self.input_format)


def metadata_from_config(cfg, fallback: str | None = None):
    """``MetadataCatalog`` entry of the config's (first) test dataset, or of ``fallback``.

    Raises:
        ValueError: if neither has ``thing_classes`` (class names are needed to label boxes).
    """
    names = OmegaConf.select(cfg, "dataloader.test.dataset.names", default=None)
    if isinstance(names, str) or names is None:
        names = [names] if names else []
    for name in [*list(names), fallback]:
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
