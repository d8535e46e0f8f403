"""Exported files: write ATSS as ONNX or TorchScript with what prediction needs, read them back.

A file holds the graph of :class:`~efl_d2.export.ExportableATSS` (one (3, h, w) float32 image at
the test size in; boxes, scores, classes out) and an :class:`ExportMetadata` as JSON: ONNX in the
model's ``metadata_props`` under ``efl_d2``, TorchScript as the extra file ``efl_d2.json``.
ONNX and onnxruntime are the optional ``export`` extra (``pip install -e ".[export]"``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import warnings
import zipfile

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import Instances
from PIL import Image
from torch import Tensor

from .._atomic import atomic_write
from ..model_zoo.predictor import resize_to_test_size, to_image_pixels
from .wrapper import ExportableATSS

__all__ = ["FORMATS", "ExportMetadata", "ExportedModel", "export_model"]

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "efl_d2"  # ONNX metadata_props key; TorchScript extra file METADATA_KEY + ".json"
ONNX_OPSET = 17
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["boxes", "scores", "classes"]


@dataclasses.dataclass(frozen=True)
class ExportMetadata:
    """What prediction with an exported file needs besides the graph."""

    class_names: list[str]
    #: the test-time resize: ``ResizeShortestEdge(test_short_edge, test_max_size)`` (bilinear)
    test_short_edge: int
    test_max_size: int
    #: channel order of the graph's input image, e.g. "BGR"
    input_format: str
    meta_architecture: str = "ATSS"

    @classmethod
    def from_predictor(cls, predictor, class_names: list[str]) -> ExportMetadata:
        """The metadata of a :class:`~efl_d2.model_zoo.LazyPredictor`'s model and test resize.

        Raises:
            ValueError: if the test-time augmentations are not one fixed ``ResizeShortestEdge``
                with bilinear interpolation (the only resize the file records), or the class
                names do not match the model's class count.
        """
        augs = predictor.augmentations.augs
        resize = augs[0] if len(augs) == 1 else None
        if (
            type(resize) is not T.ResizeShortestEdge
            or len(set(resize.short_edge_length)) != 1
            or resize.interp != Image.BILINEAR
        ):
            raise ValueError(
                "export records the test-time resize as one fixed, bilinear ResizeShortestEdge; "
                f"the config's test augmentations are {augs}"
            )
        num_classes = predictor.model.num_classes
        if len(class_names) != num_classes:
            raise ValueError(
                f"the model predicts {num_classes} classes but {len(class_names)} class names "
                "were given"
            )
        return cls(
            class_names=list(class_names),
            test_short_edge=int(resize.short_edge_length[0]),
            test_max_size=int(resize.max_size),
            input_format=predictor.input_format,
            meta_architecture=type(predictor.model).__name__,
        )

    def augmentations(self) -> list[T.Augmentation]:
        """The test-time resize, as the predictor's augmentations."""
        return [T.ResizeShortestEdge(self.test_short_edge, self.test_max_size)]

    def example_size(self) -> tuple[int, int]:
        """A 4:3 (h, w) at the test size, to trace with."""
        return self.test_short_edge, min(self.test_max_size, round(self.test_short_edge * 4 / 3))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ExportMetadata:
        return cls(**json.loads(text))


@contextlib.contextmanager
def _quiet_export():
    """Silence the deprecation notices of TorchScript tracing and of the TorchScript-based ONNX
    exporter (both still supported by this torch) and the TracerWarnings of Detectron2's shape
    asserts (they check sizes, not data): noise on the command line."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, torch.jit.TracerWarning):
            warnings.filterwarnings("ignore", category=category)
        yield


def _onnx_bytes(module: ExportableATSS, example: Tensor, metadata: ExportMetadata) -> bytes:
    import onnx

    buffer = io.BytesIO()
    # TorchScript-based exporter (dynamo=False): it traces the same graph as torch.jit.trace and
    # maps torchvision's nms to ONNX NonMaxSuppression; the dynamo exporter cannot take the
    # data-dependent candidate counts without rewriting them for torch.export.
    torch.onnx.export(
        module,
        (example,),
        buffer,
        dynamo=False,
        opset_version=ONNX_OPSET,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes={
            "image": {1: "height", 2: "width"},
            **{name: {0: "detections"} for name in OUTPUT_NAMES},
        },
    )
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    return proto.SerializeToString()


def export_model(
    model,
    metadata: ExportMetadata,
    path: str,
    format: str,
    example: Tensor | None = None,
) -> None:
    """Trace ``model`` (an ATSS) once and write it to ``path`` (atomically) with ``metadata``.

    Args:
        format: "onnx" (opset 17, dynamic height and width) or "torchscript".
        example: the (3, h, w) image to trace with; default a fixed random image of
            :meth:`ExportMetadata.example_size`. Any size works for any other size.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    module = ExportableATSS(model)
    if example is None:
        generator = torch.Generator().manual_seed(0)
        example = torch.rand(3, *metadata.example_size(), generator=generator) * 255
    example = example.to(model.device)
    with _quiet_export(), torch.no_grad():
        if format == "onnx":
            data = _onnx_bytes(module, example, metadata)
            atomic_write(path, lambda f: f.write(data))
        else:
            traced = torch.jit.trace(module, (example,), check_trace=False)
            extra = {f"{METADATA_KEY}.json": metadata.to_json()}
            atomic_write(path, lambda f: torch.jit.save(traced, f, _extra_files=extra))


class ExportedModel:
    """An exported file, run on the CPU: ONNX with onnxruntime, TorchScript with torch.

    Example::

        exported = ExportedModel("atss.onnx")
        instances = exported(image)  # (H, W, 3) uint8 in exported.metadata.input_format
    """

    def __init__(self, path: str, num_threads: int | None = None):
        """
        Args:
            path: an ONNX or TorchScript file written by :func:`export_model` (the format is
                read from the content: TorchScript files are zip archives).
            num_threads: onnxruntime's intra-op threads (default: its own choice); TorchScript
                runs with torch's setting.
        """
        if zipfile.is_zipfile(path):
            import torchvision  # noqa: F401  (registers torchvision::nms for the loaded graph)

            extra = {f"{METADATA_KEY}.json": ""}
            self._module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
            self._session = None
            text = extra[f"{METADATA_KEY}.json"]
        else:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            if num_threads:
                options.intra_op_num_threads = num_threads
            self._session = onnxruntime.InferenceSession(
                path, options, providers=["CPUExecutionProvider"]
            )
            text = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "")
        if not text:
            raise ValueError(f"{path!r} has no efl_d2 metadata: not written by efl_d2's export")
        self.format = "onnx" if self._session is not None else "torchscript"
        self.metadata = ExportMetadata.from_json(text)

    def run(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The graph: a (3, h, w) float32 image at the test size -> boxes (N, 4) in its pixels,
        scores (N,), classes (N,) int64 (see :class:`~efl_d2.export.ExportableATSS`)."""
        if self._session is None:
            with torch.no_grad():
                return self._module(image)
        outputs = self._session.run(None, {INPUT_NAMES[0]: image.numpy()})
        return tuple(torch.from_numpy(x) for x in outputs)

    def __call__(self, image: np.ndarray) -> Instances:
        """Detections of an (H, W, C) uint8 image in :attr:`metadata`'s input format, in its
        pixels: resized and rescaled as :class:`~efl_d2.model_zoo.LazyPredictor` does."""
        tensor = resize_to_test_size(image, self.metadata.augmentations())
        test_size = (int(tensor.shape[1]), int(tensor.shape[2]))
        return to_image_pixels(*self.run(tensor), test_size, image.shape[:2])
