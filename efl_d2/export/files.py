"""Exported files: write ATSS as ONNX or TorchScript with what prediction needs, read them back.

A file holds the graph of :class:`~efl_d2.export.ExportableATSS` (one (3, h, w) float32 image at
the test size in; boxes, scores, classes out) and an :class:`ExportMetadata` as JSON: ONNX in the
model's ``metadata_props`` under ``efl_d2``, TorchScript as the extra file ``efl_d2.json``.
ONNX and onnxruntime are the optional ``export`` extra (``pip install -e ".[export]"``).
:class:`ExportedModel` reads either and predicts as :class:`~efl_d2.model_zoo.LazyPredictor`
does (``tools/predict.py --exported``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import warnings
import zipfile

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from PIL import Image
from torch import Tensor

from .._atomic import atomic_write
from ..model_zoo.predictor import (
    image_to_rgb,
    read_image_file,
    resize_to_test_size,
    to_image_pixels,
)
from .wrapper import ExportableATSS

__all__ = [
    "FORMATS",
    "ExportMetadata",
    "ExportedFileError",
    "ExportedModel",
    "InvalidImageError",
    "check_image",
    "export_model",
]

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "efl_d2"  # ONNX metadata_props key; TorchScript extra file METADATA_KEY + ".json"
ONNX_OPSET = 17
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["boxes", "scores", "classes"]


class ExportedFileError(ValueError):
    """A file :class:`ExportedModel` cannot run (missing, unreadable, neither ONNX nor TorchScript,
    or not written by efl_d2's export); the message names it and says what to do."""


class InvalidImageError(ValueError):
    """An image array an exported model cannot take (dtype, shape, or a size that leaves no
    pixel at the test size); the message names the problem."""


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

    def test_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) an image of ``height`` x ``width`` is resized to (``ResizeShortestEdge``'s
        rounding: a very thin image can get 0 rows or columns)."""
        return T.ResizeShortestEdge.get_output_shape(
            height, width, self.test_short_edge, self.test_max_size
        )

    def detectron2_metadata(self, name: str) -> Metadata:
        """A detectron2 ``Metadata`` with the class names as ``thing_classes`` (what
        ``Visualizer`` labels boxes with), not registered in ``MetadataCatalog``."""
        return Metadata(name=name, thing_classes=list(self.class_names))

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


def _file_head(path: str) -> bytes:
    """The first 4 bytes of ``path``; :class:`ExportedFileError` if it is missing, a directory,
    unreadable or empty (the checks ``check_checkpoint_file`` runs on checkpoints)."""
    if os.path.isdir(path):
        raise ExportedFileError(
            f"Exported file {path} is a directory: pass the .onnx or .pt file written by "
            "tools/export_model.py."
        )
    if not os.path.exists(path):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        raise ExportedFileError(f"Exported file {path}: no such file{where}. Check the path.")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except PermissionError as e:
        raise ExportedFileError(
            f"Exported file {path} cannot be read (permission denied): make it readable "
            "(chmod a+r) or copy it somewhere readable."
        ) from e
    except OSError as e:
        raise ExportedFileError(
            f"Exported file {path} cannot be read ({e.strerror or e}): check the file and its disk."
        ) from e
    if not head:
        raise ExportedFileError(f"Exported file {path} is empty (0 bytes): export it again.")
    return head


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load_torchscript(path: str):
    """(module, metadata text) of a TorchScript file; :class:`ExportedFileError` for a zip
    archive that is damaged, a ``torch.save`` checkpoint, or not TorchScript."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ExportedFileError(
            f"Exported file {path} is truncated or damaged (its zip directory cannot be read: "
            f"{e}): export it again."
        ) from e
    if not any(n.endswith("/constants.pkl") for n in names):  # every TorchScript archive has one
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise ExportedFileError(
                f"Exported file {path} is a PyTorch checkpoint (torch.save), not an exported "
                "model: export it with tools/export_model.py, or predict from it with its config "
                "(--checkpoint)."
            )
        raise ExportedFileError(
            f"Exported file {path} is a zip archive but not a TorchScript file: pass a file "
            "written by tools/export_model.py."
        )
    import torchvision  # noqa: F401  (registers torchvision::nms for the loaded graph)

    extra = {f"{METADATA_KEY}.json": ""}
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice: still supported
            warnings.filterwarnings("ignore", category=FutureWarning)
            module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as e:
        raise ExportedFileError(
            f"Exported file {path} cannot be loaded as TorchScript ({_first_line(e)}): export "
            "it again."
        ) from e
    return module, extra[f"{METADATA_KEY}.json"]


def _load_onnx(path: str, num_threads: int | None):
    """(onnxruntime session, metadata text) of an ONNX file; :class:`ExportedFileError` if
    onnxruntime cannot load it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            f"{path} is not TorchScript, so ONNX: running it needs onnxruntime "
            '(pip install -e ".[export]")'
        ) from e
    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    try:
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's error types derive from Exception only
        # its messages read "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from <path>
        # failed:<why>": the path is in ours already
        why = _first_line(e).rsplit("failed:", 1)[-1].strip().rstrip(".")
        raise ExportedFileError(
            f"Exported file {path} is neither TorchScript nor ONNX that onnxruntime loads "
            f"({why}): pass a file written by tools/export_model.py."
        ) from e
    return session, session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "")


def check_image(image, metadata: ExportMetadata) -> tuple[int, int]:
    """The test size of ``image``, an (H, W, 3) uint8 array (what ``read`` returns), or
    :class:`InvalidImageError` naming what is wrong with it. The graph takes 3 channels of pixel
    values 0..255 after the resize; other arrays would fail inside it with an error that does
    not name the image's problem, or (float arrays) be resized otherwise than the PyTorch
    predictor resizes them."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(
            f"expected an (H, W, 3) uint8 numpy array, got a {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise InvalidImageError(
            f"expected a uint8 image (pixel values 0..255, as read() returns), got dtype "
            f"{image.dtype}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        hint = ""
        if image.ndim == 3 and image.shape[2] == 4:
            hint = " (4 channels: drop the alpha channel, or read the file with read())"
        raise InvalidImageError(
            f"expected an (H, W, 3) image in {metadata.input_format} channel order, got shape "
            f"{tuple(image.shape)}{hint}"
        )
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise InvalidImageError(f"the image is empty (shape {tuple(image.shape)})")
    size = metadata.test_size(height, width)
    if 0 in size:
        raise InvalidImageError(
            f"a {height}x{width} image (height x width) is resized to {size[0]}x{size[1]} at "
            f"the test size (short edge {metadata.test_short_edge}, max "
            f"{metadata.test_max_size}): too thin to predict on"
        )
    return size


class ExportedModel:
    """An exported file, run on the CPU: ONNX with onnxruntime, TorchScript with torch. A
    predictor with :class:`~efl_d2.model_zoo.LazyPredictor`'s interface (``read``, ``to_rgb``,
    ``test_size``, ``__call__``): the same reader, resize and rescale, no config needed.

    Example::

        exported = ExportedModel("atss.onnx")
        instances = exported(exported.read("image.jpg"))  # or exported("image.jpg")
    """

    def __init__(self, path: str, num_threads: int | None = None):
        """
        Args:
            path: an ONNX or TorchScript file written by :func:`export_model` (the format is
                read from the content: TorchScript files are zip archives).
            num_threads: onnxruntime's intra-op threads (default: its own choice); TorchScript
                runs with torch's setting.

        Raises:
            ExportedFileError: (a ``ValueError``) one sentence naming the file, if it is
                missing, a directory, unreadable, empty, neither TorchScript nor ONNX, or
                without efl_d2's metadata.
            ImportError: for an ONNX file, if onnxruntime is not installed.
        """
        head = _file_head(path)
        if head.startswith(b"PK"):  # a zip archive: TorchScript (or something else zipped)
            self._module, text = _load_torchscript(path)
            self._session = None
        elif head.startswith(b"\x80"):  # pickle protocol 2+: never the start of an ONNX file
            raise ExportedFileError(
                f"Exported file {path} is a pickle (a legacy torch.save or detectron2 .pkl "
                "checkpoint?), not an exported model: export it with tools/export_model.py, or "
                "predict from it with its config (--checkpoint)."
            )
        else:
            self._module = None
            self._session, text = _load_onnx(path, num_threads)
        if not text:
            raise ExportedFileError(
                f"Exported file {path} has no efl_d2 metadata: not written by efl_d2's export "
                "(tools/export_model.py)."
            )
        try:
            self.metadata = ExportMetadata.from_json(text)
        except (ValueError, TypeError) as e:
            raise ExportedFileError(
                f"Exported file {path} has unreadable efl_d2 metadata ({e}): export it again."
            ) from e
        self.format = "onnx" if self._session is not None else "torchscript"
        #: (height, width) the last image was resized to for the graph; None before the first
        #: call
        self.test_size: tuple[int, int] | None = None

    @property
    def input_format(self) -> str:
        """Channel order of the images it takes (as :attr:`LazyPredictor.input_format`)."""
        return self.metadata.input_format

    def read(self, path: str) -> np.ndarray:
        """Read an image file as :meth:`LazyPredictor.read` reads it, in :attr:`input_format`
        (:func:`~efl_d2.model_zoo.predictor.read_image_file`).

        Raises:
            RuntimeError: naming the file, if it cannot be read.
        """
        return read_image_file(path, self.input_format)

    def to_rgb(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """An image read in :attr:`input_format` as RGB, shrunk to ``size`` if given
        (:func:`~efl_d2.model_zoo.predictor.image_to_rgb`)."""
        return image_to_rgb(image, self.input_format, size)

    def run(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The graph: a (3, h, w) float32 image at the test size -> boxes (N, 4) in its pixels,
        scores (N,), classes (N,) int64 (see :class:`~efl_d2.export.ExportableATSS`)."""
        if self._session is None:
            with torch.no_grad():
                return self._module(image)
        outputs = self._session.run(None, {INPUT_NAMES[0]: image.numpy()})
        return tuple(torch.from_numpy(x) for x in outputs)

    def __call__(self, image: str | np.ndarray) -> Instances:
        """Detections of an image file, or of an (H, W, 3) uint8 array in :attr:`input_format`,
        in its pixels: resized and rescaled as :class:`~efl_d2.model_zoo.LazyPredictor` does.

        Raises:
            InvalidImageError: (a ``ValueError``) for an array of another dtype or shape, an
                empty one, or one too thin to keep a pixel at the test size
                (:func:`check_image`).
            RuntimeError: for a file that cannot be read.
        """
        if isinstance(image, str):
            image = self.read(image)
        check_image(image, self.metadata)
        tensor = resize_to_test_size(image, self.metadata.augmentations())
        test_size = (int(tensor.shape[1]), int(tensor.shape[2]))
        instances = to_image_pixels(*self.run(tensor), test_size, image.shape[:2])
        self.test_size = test_size
        return instances
