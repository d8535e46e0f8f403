"""Reading checkpoint files, and recognising their format by content: detectron2 checkpoints pass
unchanged; torchvision ResNet weights and the official EFL release are converted to the model's
names (:mod:`efl_d2.checkpoint.torchvision`, :mod:`efl_d2.official.conversion`)."""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping

import numpy as np
import torch

from ..official.conversion import (
    convert_official_to_d2,
    is_official_state_dict,
    unwrap_official_checkpoint,
)
from .state_diff import CheckpointMismatchError
from .torchvision import convert_torchvision_to_d2, is_torchvision_resnet_state_dict

__all__ = [
    "OFFICIAL_AUTHOR",
    "TORCHVISION_AUTHOR",
    "CheckpointReadError",
    "check_checkpoint_file",
    "interpret_checkpoint",
    "load_checkpoint_file",
    "read_loss_statistics",
]

logger = logging.getLogger(__name__)

OFFICIAL_AUTHOR = "official EFL release (ModelTC United-Perception), converted by efl_d2"
TORCHVISION_AUTHOR = "torchvision, converted by efl_d2"


class CheckpointReadError(RuntimeError):
    """A checkpoint file cannot be read (empty, truncated, not a checkpoint); the message names
    it."""


def _is_url(path: str) -> bool:
    """A remote checkpoint (``https://``, ``detectron2://``, ...): fetched when loaded."""
    return "://" in path


def _check_local_file(path: str) -> bytes:
    """Raise :class:`CheckpointReadError` unless ``path`` is an existing, readable, non-empty
    file (the message says what to do); returns its first 4 bytes."""
    if os.path.isdir(path):
        suggested = _suggested_file(path)
        raise CheckpointReadError(
            f"Checkpoint {path} is a directory, not a checkpoint file: pass a checkpoint file "
            + (f"such as {suggested}." if suggested else "(e.g. a training run's model_final.pth).")
        )
    if not os.path.exists(path):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        raise CheckpointReadError(
            f"Checkpoint {path}: no such file{where}. Check the path, or pass a URL."
        )
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except PermissionError as e:
        raise CheckpointReadError(
            f"Checkpoint {path} cannot be read (permission denied): make it readable "
            "(chmod a+r) or copy it somewhere readable."
        ) from e
    except OSError as e:
        raise CheckpointReadError(
            f"Checkpoint {path} cannot be read ({e.strerror or e}): check the file and its disk."
        ) from e
    if not head:
        raise CheckpointReadError(
            f"Checkpoint {path} is empty (0 bytes; an interrupted save?): delete it, or point at "
            "another checkpoint."
        )
    return head


def _suggested_file(directory: str) -> str:
    """The checkpoint of a training output folder to name in a message: the one its
    ``last_checkpoint`` names, else the last ``*.pth`` / ``*.pkl`` by name; "" if none."""
    try:
        names = os.listdir(directory)
        if "last_checkpoint" in names:
            with open(os.path.join(directory, "last_checkpoint")) as f:
                tagged = f.read().strip()
            if tagged in names:
                return os.path.join(directory, tagged)
    except OSError:
        return ""
    files = sorted(n for n in names if n.endswith((".pth", ".pkl")))
    return os.path.join(directory, files[-1]) if files else ""


def check_checkpoint_file(path: str) -> None:
    """Check, cheaply, that a local checkpoint can be loaded, before any work is done with it.

    Raises :class:`CheckpointReadError` (one line naming ``path`` and saying what to do) for a
    missing file, a directory, a file that cannot be opened (permissions), an empty file, and a
    file that is not a checkpoint by its first bytes: neither a zip written by ``torch.save``
    (whose directory must be intact and hold a ``data.pkl``: a truncated download fails here)
    nor a pickle (legacy ``torch.save``, detectron2 ``.pkl``). Only the header and a zip's
    directory are read, not the tensors: a file that passes can still fail to load (e.g. a
    truncated legacy pickle), which :func:`load_checkpoint_file` / ``EFLCheckpointer`` then
    report. URLs (anything with ``://``: ``https://``, ``detectron2://``, ...) are not checked:
    they are fetched when loaded.
    """
    if _is_url(path):
        return
    head = _check_local_file(path)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointReadError(
                f"Checkpoint {path} is truncated or damaged (its zip directory cannot be read: "
                f"{e}): download or copy it again, or point at another checkpoint."
            ) from e
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise CheckpointReadError(
                f"Checkpoint {path} is a zip archive but not a PyTorch checkpoint (no data.pkl "
                "in it): point at a .pth written by torch.save."
            )
    # a pickle: protocol 2+ starts with PROTO (0x80), protocols 0/1 with MARK or an empty dict
    # or list
    elif head[:1] not in (b"\x80", b"(", b"}", b"]"):
        raise CheckpointReadError(
            f"Checkpoint {path} is not a PyTorch checkpoint (neither a torch.save file nor a "
            f"pickle: it starts with {head!r}): point at a .pth or .pkl checkpoint."
        )


def load_checkpoint_file(f: str, *, allow_unsafe_pickle: bool = False):
    """``torch.load`` of a checkpoint file on the CPU, tensors only unless
    ``allow_unsafe_pickle``, with errors that name the file (:class:`CheckpointReadError`;
    a missing file, a directory or a file without read permission is said to be one)."""
    if isinstance(f, (str, os.PathLike)) and not _is_url(os.fspath(f)):
        _check_local_file(os.fspath(f))
    try:
        return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        # "Unsupported global": pickled Python objects; anything else (bad opcode, ...) is
        # a damaged or foreign file
        if "unsupported global" not in str(e).lower():
            raise _unreadable(f, e) from e
        if not allow_unsafe_pickle:
            raise RuntimeError(
                f"{f} holds Python objects other than tensors, which torch.load refuses by "
                "default (weights_only=True). If you trust the file, load it with "
                "EFLCheckpointer(..., allow_unsafe_pickle=True) or convert it once with "
                "tools/convert_official_to_d2.py --trust-pickle."
            ) from e
        logger.warning(f"Loading {f} with weights_only=False (trusted file).")
        return torch.load(f, map_location=torch.device("cpu"), weights_only=False)
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise _unreadable(f, e) from e


def _unreadable(f, e: BaseException) -> CheckpointReadError:
    if isinstance(e, pickle.UnpicklingError):  # torch's text is about weights_only, not this
        detail = "unpickling failed"
    else:
        detail = (str(e).strip().splitlines() or [""])[0]
    return CheckpointReadError(
        f"Checkpoint {f} cannot be read ({type(e).__name__}: {detail}): the file is "
        "truncated or not a PyTorch checkpoint. Delete it, or point at another checkpoint."
    )


def read_loss_statistics(path: str) -> dict:
    """The per-class statistics (``pos_grad``, ``neg_grad``, ``pos_neg``; float64, CPU) of every
    loss in a checkpoint that keeps them (EFL, EQLv2&Focal), by the loss's module path (e.g.
    ``"cls_loss"``); empty if none. Tensors only: the file is read with ``weights_only=True``."""
    data = load_checkpoint_file(path)
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CheckpointReadError(f"{path} holds no state dict (found {type(data).__name__}).")
    out = {}
    for key in state:
        if key.endswith("pos_neg"):
            prefix = key[: -len("pos_neg")]
            out[prefix.rstrip(".") or "loss"] = {
                name: state[prefix + name].detach().double().cpu()
                for name in ("pos_grad", "neg_grad", "pos_neg")
                if prefix + name in state
            }
    return out


def _is_unprefixed_d2_resnet(state: dict) -> bool:
    """detectron2 ResNet names without a model prefix (``stem.conv1.weight``, ``res2.0...``)."""
    return "stem.conv1.weight" in state and all(
        k.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for k in state
    )


def _resnet_prefix(model: torch.nn.Module, filename: str) -> str:
    """The name prefix of the model's (only) detectron2 ResNet, e.g. ``backbone.bottom_up.``."""
    suffix = "stem.conv1.weight"
    keys = [k for k in model.state_dict() if k.endswith(suffix)]
    if len(keys) != 1:
        raise CheckpointMismatchError(
            f"{filename} holds torchvision ResNet weights, but the model has "
            f"{len(keys)} detectron2 ResNet stems ({keys}); expected exactly one."
        )
    return keys[0][: -len(suffix)]


def _to_tensors(state: dict) -> None:
    """numpy arrays to tensors, in place (as fvcore's ``Checkpointer`` converts them)."""
    for k in list(state.keys()):
        v = state[k]
        if not isinstance(v, (np.ndarray, torch.Tensor)):  # fvcore's error, ValueError included
            message = f"Unsupported type found in checkpoint! {k}: {type(v)}"
            raise ValueError(message)  # noqa: TRY004
        if not isinstance(v, torch.Tensor):
            state[k] = torch.from_numpy(v)


def interpret_checkpoint(
    loaded: dict,
    filename: str,
    model: torch.nn.Module,
    *,
    official_cls_layout: str,
    log: logging.Logger = logger,
) -> dict:
    """Recognise the format of a read checkpoint and convert a foreign one to ``model``'s names.

    Returns the checkpoint with ``efl_d2_file`` (``filename``, for messages) and, for a converted
    one, ``efl_d2_source`` ("official" or "torchvision") and what the conversion found.
    """
    converted = _converted(loaded, filename, model, official_cls_layout, log)
    return {**converted, "efl_d2_file": filename}


def _converted(loaded: dict, filename: str, model, official_cls_layout: str, log) -> dict:
    """``loaded``, or its conversion to ``model``'s names if it is a foreign checkpoint."""
    if loaded.get("efl_d2_source") or not isinstance(loaded.get("model"), Mapping):
        return loaded  # written by our converters (names final), or not a state dict
    state, _ = unwrap_official_checkpoint(loaded["model"])
    if is_official_state_dict(state):
        try:
            converted, info = convert_official_to_d2(
                loaded["model"], cls_layout=official_cls_layout
            )
        except (KeyError, ValueError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise CheckpointMismatchError(f"Official EFL checkpoint {filename}: {msg}") from e
        log.info(
            f"{filename}: official EFL checkpoint (module. prefix "
            f"{info['module_prefix']}, {info['num_classes']} classes, "
            f"{info['num_anchors']} anchors per location); converted to efl_d2 names."
        )
        return {
            "model": converted,
            "__author__": OFFICIAL_AUTHOR,
            "efl_d2_source": "official",
            "efl_d2_conversion": info,
        }
    if is_torchvision_resnet_state_dict(state):
        prefix = _resnet_prefix(model, filename)
        log.info(f"{filename}: torchvision ResNet weights; renamed under {prefix!r}.")
        return {
            "model": convert_torchvision_to_d2(state, prefix),
            "__author__": TORCHVISION_AUTHOR,
            "efl_d2_source": "torchvision",
            "efl_d2_resnet_prefix": prefix,
        }
    if _is_unprefixed_d2_resnet(state):
        # detectron2 model-zoo style ImageNet ResNet (e.g. tools/convert_torchvision_to_d2.py
        # output): place it under the model's ResNet exactly instead of by name heuristics,
        # so that a depth mismatch is an error rather than a warning.
        prefix = _resnet_prefix(model, filename)
        _to_tensors(state)
        return {
            **{k: v for k, v in loaded.items() if k not in ("model", "matching_heuristics")},
            "model": {prefix + k: v for k, v in state.items()},
            "efl_d2_source": "torchvision",
            "efl_d2_resnet_prefix": prefix,
        }
    return loaded
