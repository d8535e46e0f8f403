"""Export ATSS to ONNX and TorchScript (``tools/export_model.py``, ``docs/export.md``).

- :class:`ExportableATSS`: the traced module, one image at the test size in, detections out.
- :func:`export_model`: trace it and write an ONNX or TorchScript file with its
  :class:`ExportMetadata` (class names, test-time resize, input format).
- :class:`ExportedModel`: run such a file (onnxruntime or TorchScript) on images, as a predictor
  with :class:`~efl_d2.model_zoo.LazyPredictor`'s ``read`` / ``to_rgb`` / ``test_size``
  (``tools/predict.py --exported``).
"""

from .files import (
    FORMATS,
    ExportedFileError,
    ExportedModel,
    ExportMetadata,
    InvalidImageError,
    check_image,
    export_model,
)
from .wrapper import ExportableATSS, class_offset_nms

__all__ = [
    "FORMATS",
    "ExportMetadata",
    "ExportableATSS",
    "ExportedFileError",
    "ExportedModel",
    "InvalidImageError",
    "check_image",
    "class_offset_nms",
    "export_model",
]
