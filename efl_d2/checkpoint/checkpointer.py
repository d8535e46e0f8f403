"""``EFLCheckpointer``: detectron2's ``DetectionCheckpointer`` that also reads foreign checkpoints.

Formats recognised by content (not by file name), so ``train.init_checkpoint=`` can point at any:

- detectron2 checkpoints (``.pth`` from ``DetectionCheckpointer.save``, model-zoo ``.pkl``):
  loaded exactly as detectron2 does; with ``strict=True`` any missing / unexpected / mis-shaped
  key is an error instead of a warning.
- torchvision ResNet ImageNet weights (e.g. ``resnet50-0676ba61.pth``): renamed to the model's
  ``...bottom_up.`` ResNet (:mod:`efl_d2.checkpoint.torchvision`). Every ResNet parameter must
  match; the rest of the detector keeps its initialisation.
- official EFL release (United-Perception ``.pth``, any top-level layout, with or without
  ``module.``) and files written by ``tools/convert_official_to_d2.py``: converted and adapted to
  the model (:mod:`efl_d2.checkpoint.official`); always strict, and architecture differences that
  change the computation are logged.

A mismatch raises :class:`CheckpointMismatchError` listing every key that did not match, with a
hint for the usual cause (class count); a file that cannot be read at all (empty, truncated, not a
checkpoint) raises :class:`CheckpointReadError` naming the file.

Saving is atomic (temporary file, flush + fsync, rename; ``last_checkpoint`` is written the same way
and only after the checkpoint is complete), and ``resume_or_load(..., resume=True)`` resumes from
the newest checkpoint of ``save_dir`` that reads, saying which ones it skipped and why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer

from .._atomic import TMP_MARK as _TMP_MARK
from .._atomic import atomic_write
from .official import convert_official_to_d2, is_official_state_dict, unwrap_official_checkpoint
from .official_target import adapt_to_model, check_official_architecture
from .torchvision import convert_torchvision_to_d2, is_torchvision_resnet_state_dict

__all__ = [
    "CheckpointMismatchError",
    "CheckpointReadError",
    "EFLCheckpointer",
    "atomic_write",
    "compare_state_dicts",
    "load_checkpoint_file",
    "read_loss_statistics",
]

logger = logging.getLogger(__name__)

OFFICIAL_AUTHOR = "official EFL release (ModelTC United-Perception), converted by efl_d2"
TORCHVISION_AUTHOR = "torchvision, converted by efl_d2"

# Model state that never comes from a checkpoint.
_ALWAYS_IGNORED_MISSING = ("pixel_mean", "pixel_std")
_EFL_BUFFERS = tuple(f"cls_loss.{b}" for b in ("pos_grad", "neg_grad", "pos_neg"))


def _is_unprefixed_d2_resnet(state: dict) -> bool:
    """detectron2 ResNet names without a model prefix (``stem.conv1.weight``, ``res2.0...``)."""
    return "stem.conv1.weight" in state and all(
        k.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for k in state
    )


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model; the message lists them."""


class CheckpointReadError(RuntimeError):
    """A checkpoint file cannot be read (empty, truncated, not a checkpoint); the message names it."""


def load_checkpoint_file(f: str, *, allow_unsafe_pickle: bool = False):
    """``torch.load`` of a checkpoint file on the CPU, tensors only unless
    ``allow_unsafe_pickle``, with errors that name the file (:class:`CheckpointReadError`)."""
    if os.path.isfile(f) and os.path.getsize(f) == 0:
        raise CheckpointReadError(
            f"Checkpoint {f} is empty (0 bytes; an interrupted save?): delete it, or point at "
            "another checkpoint."
        )
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


def matches_prefix(name: str, prefixes) -> bool:
    """Whether the parameter / module ``name`` is ``p`` or lies under ``p.`` for a prefix p (the
    modules of ``EFLCheckpointer.reinitialize`` and of decoupled training's ``retrain_only``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


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


def _checkpoint_iteration(file_name: str) -> float:
    """Sort key of a periodic checkpoint name: its iteration; ``*_final.pth`` after all."""
    if file_name.endswith("_final.pth"):
        return float("inf")
    m = re.search(r"_(\d+)\.pth$", file_name)
    return int(m.group(1)) if m else -1.0


def _shape(t) -> tuple:
    return tuple(getattr(t, "shape", ()))


def compare_state_dicts(
    model_state: dict,
    ckpt_state: dict,
    *,
    ignore_missing: Iterable[str] = (),
    scope: str | None = None,
) -> dict:
    """Keys that differ between a model's state dict and a checkpoint's.

    Args:
        model_state, ckpt_state: ``{name: tensor}``.
        ignore_missing: model keys (exact names or suffixes starting with ".") not required from
            the checkpoint; BN ``num_batches_tracked`` and ``pixel_mean``/``pixel_std`` always are.
        scope: if set, only model keys starting with it are required (e.g. the ResNet of a
            detector loaded from ImageNet weights).

    Returns:
        ``{"missing": [...], "unexpected": [...], "shapes": [(key, ckpt shape, model shape)]}``.
    """
    ignore = tuple(ignore_missing)

    def ignored(k: str) -> bool:
        return (
            k.endswith("num_batches_tracked")
            or k in _ALWAYS_IGNORED_MISSING
            or "anchor_generator.cell_anchors" in k
            or any(k == i or (i.startswith(".") and k.endswith(i)) for i in ignore)
        )

    missing = [
        k
        for k in model_state
        if k not in ckpt_state and not ignored(k) and (scope is None or k.startswith(scope))
    ]
    unexpected = [
        k for k in ckpt_state if k not in model_state and not k.endswith("num_batches_tracked")
    ]
    shapes = [
        (k, _shape(v), _shape(model_state[k]))
        for k, v in ckpt_state.items()
        if k in model_state and _shape(v) != _shape(model_state[k])
    ]
    return {"missing": missing, "unexpected": unexpected, "shapes": shapes}


def _class_count_hint(model_state: dict, shapes: list) -> str:
    for key, ckpt_shape, model_shape in shapes:
        if key.endswith("cls_score.weight") and ckpt_shape and model_shape:
            box_key = key[: -len("cls_score.weight")] + "bbox_pred.weight"
            box = model_state.get(box_key)
            anchors = box.shape[0] // 4 if box is not None and box.shape[0] % 4 == 0 else 1
            return (
                f"The checkpoint's classifier has {ckpt_shape[0]} outputs = {anchors} anchors x "
                f"{ckpt_shape[0] / anchors:g} classes, the model's {model_shape[0]} = {anchors} x "
                f"{model_shape[0] // anchors}: set model.num_classes (and the loss's num_classes) "
                f"to {ckpt_shape[0] / anchors:g} to use this checkpoint, or use a checkpoint "
                "trained on the model's dataset."
            )
        if key.endswith("cls_loss.pos_neg"):
            return (
                f"The checkpoint's EFL statistics cover {ckpt_shape[0]} classes, the model's loss "
                f"{model_shape[0]}: set model.num_classes to match."
            )
    return ""


def format_mismatch(source: str, report: dict, model_state: dict, limit: int = 20) -> str:
    """A readable multi-line description of :func:`compare_state_dicts`'s report."""

    def listing(items):
        items = list(items)
        lines = [f"    {x}" for x in items[:limit]]
        if len(items) > limit:
            lines.append(f"    ... and {len(items) - limit} more")
        return lines

    n = sum(len(v) for v in report.values())
    lines = [f"{source} does not match the model ({n} problems):"]
    if report["shapes"]:
        lines.append("  shape mismatch (checkpoint vs model):")
        lines += listing(f"{k}: {list(a)} vs {list(b)}" for k, a, b in report["shapes"])
    if report["missing"]:
        lines.append("  missing in the checkpoint:")
        lines += listing(report["missing"])
    if report["unexpected"]:
        lines.append("  in the checkpoint but not in the model:")
        lines += listing(report["unexpected"])
    hint = _class_count_hint(model_state, report["shapes"])
    if hint:
        lines.append("Hint: " + hint)
    return "\n".join(lines)


class EFLCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that also loads torchvision ResNet and official EFL checkpoints.

    Drop-in: ``EFLCheckpointer(model, save_dir, trainer=trainer)`` saves exactly like
    ``DetectionCheckpointer`` and ``resume_or_load`` / ``load`` accept the formats listed in the
    module docstring.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        strict: bool = False,
        official_cls_layout: str = "anchor_major",
        allow_unsafe_pickle: bool = False,
        save_to_disk: bool | None = None,
        **checkpointables,
    ):
        """
        Args:
            model, save_dir, save_to_disk, checkpointables: as ``DetectionCheckpointer``.
            strict: also make detectron2-format checkpoints fail on any missing, unexpected or
                mis-shaped key (detectron2 only warns and skips them). Foreign formats are always
                checked.
            official_cls_layout: "anchor_major" (paper-era official code) or "class_major"
                (checkpoints used with the later ``class_first`` post-process).
            allow_unsafe_pickle: read files that hold non-tensor Python objects with
                ``torch.load(weights_only=False)``. Only for files you trust.
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.official_cls_layout = official_cls_layout
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self._current_file = "checkpoint"
        self._preloaded = None
        self.resumed_from: str | None = None
        # module prefixes that a new run (not a resumed one) does not load from its init
        # checkpoint: decoupled training's re-initialised classifier (efl_d2.engine.decoupled)
        self.reinitialize: tuple[str, ...] = ()
        self._skipping = False

    # -------------------------------------------------------------------- reading

    def _torch_load(self, f):
        return load_checkpoint_file(f, allow_unsafe_pickle=self.allow_unsafe_pickle)

    def _load_file(self, filename: str) -> dict:
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None and preloaded[0] == filename:
            return preloaded[1]  # read (and checked) by resume_or_load just before
        self._current_file = filename
        return self._interpret(super()._load_file(filename), filename)

    def load(self, path, *args, **kwargs):
        try:
            return super().load(path, *args, **kwargs)
        finally:  # detectron2 leaves this set when loading raises, failing every later load
            self._parsed_url_during_load = None

    def load_checkpoint_dict(self, checkpoint: dict, name: str = "<in-memory checkpoint>"):
        """Load an already-read checkpoint (any supported format, e.g. a bare state dict) into
        the model, with the same conversions and checks as :meth:`load`. Returns the
        incompatible keys (detectron2-format checkpoints, non-strict)."""
        self._current_file = name
        loaded = checkpoint if isinstance(checkpoint.get("model"), dict) else {"model": checkpoint}
        incompatible = self._load_model(self._interpret(dict(loaded), name))
        if incompatible is not None:
            self._log_incompatible_keys(incompatible)
        return incompatible

    def _interpret(self, loaded: dict, filename: str) -> dict:
        """Recognise the format of a read checkpoint and convert foreign ones."""
        if loaded.get("efl_d2_source") or not isinstance(loaded.get("model"), Mapping):
            return loaded  # written by our converters (names final), or not a state dict
        state, _ = unwrap_official_checkpoint(loaded["model"])
        if is_official_state_dict(state):
            try:
                converted, info = convert_official_to_d2(
                    loaded["model"], cls_layout=self.official_cls_layout
                )
            except (KeyError, ValueError) as e:
                msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
                raise CheckpointMismatchError(f"Official EFL checkpoint {filename}: {msg}") from e
            self.logger.info(
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
            prefix = self._resnet_prefix()
            self.logger.info(f"{filename}: torchvision ResNet weights; renamed under {prefix!r}.")
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
            prefix = self._resnet_prefix()
            self._convert_ndarray_to_tensor(state)
            return {
                **{k: v for k, v in loaded.items() if k not in ("model", "matching_heuristics")},
                "model": {prefix + k: v for k, v in state.items()},
                "efl_d2_source": "torchvision",
                "efl_d2_resnet_prefix": prefix,
            }
        return loaded

    def _resnet_prefix(self) -> str:
        suffix = "stem.conv1.weight"
        keys = [k for k in self.model.state_dict() if k.endswith(suffix)]
        if len(keys) != 1:
            raise CheckpointMismatchError(
                f"{self._current_file} holds torchvision ResNet weights, but the model has "
                f"{len(keys)} detectron2 ResNet stems ({keys}); expected exactly one."
            )
        return keys[0][: -len(suffix)]

    # -------------------------------------------------------------------- writing

    def save(self, name: str, **kwargs) -> None:
        """``Checkpointer.save`` made atomic (local directories): see :func:`atomic_write`."""
        if not self.save_dir or not self.save_to_disk:
            return
        if "://" in self.save_dir:  # remote storage: detectron2's own (non-atomic) write
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if "://" in self.save_dir:
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename),
            mode="w",
        )

    # -------------------------------------------------------------------- resuming

    def resume_candidates(self) -> list[str]:
        """Checkpoints of ``save_dir`` to resume from, best first: the one ``last_checkpoint``
        names, then every ``*.pth`` by iteration, newest first (``*_final.pth`` before all)."""
        if not self.save_dir or not self.path_manager.isdir(self.save_dir):
            return []
        files = sorted(
            (f for f in self.get_all_checkpoint_files() if _checkpoint_iteration(f) >= 0),
            key=lambda f: _checkpoint_iteration(os.path.basename(f)),
            reverse=True,
        )
        tagged = self.get_checkpoint_file() if self.has_checkpoint() else ""
        if tagged and self.path_manager.isfile(tagged):
            files = [tagged] + [f for f in files if f != tagged]
        return files

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """With ``resume``: load the newest checkpoint of ``save_dir`` that reads (model and all
        checkpointables) and set :attr:`resumed_from`; unreadable ones are skipped with a warning
        naming each file and why. Without a checkpoint there (or without ``resume``) load only the
        model from ``path``. Raises :class:`CheckpointReadError` when checkpoints exist but none
        reads (silently starting over would waste the run)."""
        self.resumed_from = None
        if not resume:
            return self._load_initial(path)
        self._remove_stale_temporaries()
        candidates = self.resume_candidates()
        skipped = []
        for candidate in candidates:
            try:
                self._preloaded = (candidate, self._load_file_unchecked(candidate))
            except CheckpointReadError as e:
                skipped.append(str(e))
                self.logger.warning(f"--resume: skipping {candidate}: {e}")
                continue
            if skipped:
                self.logger.warning(
                    f"--resume: resuming from {candidate} after skipping {len(skipped)} unreadable "
                    "checkpoint(s)."
                )
            self.resumed_from = candidate
            return self.load(candidate)
        if candidates:
            raise CheckpointReadError(
                f"--resume: none of the {len(candidates)} checkpoint(s) in {self.save_dir} can be "
                "read:\n  " + "\n  ".join(skipped) + "\nDelete them to start this run over, or "
                "use another train.output_dir."
            )
        self.logger.info(f"--resume: no checkpoint in {self.save_dir}; starting a new run.")
        return self._load_initial(path)

    def _load_initial(self, path: str) -> dict:
        """A new run's weights: the model from ``path`` without the :attr:`reinitialize` modules."""
        self._skipping = True
        try:
            return self.load(path, checkpointables=[])
        finally:
            self._skipping = False

    def _remove_stale_temporaries(self) -> None:
        if not self.save_to_disk or "://" in self.save_dir or not os.path.isdir(self.save_dir):
            return
        for f in os.listdir(self.save_dir):
            if _TMP_MARK in f:
                self.logger.warning(
                    f"Removing {f} in {self.save_dir}: a save that was interrupted left it."
                )
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.save_dir, f))

    def _load_file_unchecked(self, filename: str) -> dict:
        """Read (not yet load into the model) a checkpoint, raising CheckpointReadError if it
        cannot be read or holds no model."""
        self._parsed_url_during_load = urlparse(filename)
        try:
            loaded = self._load_file(filename)
        finally:
            self._parsed_url_during_load = None
        if not isinstance(loaded.get("model"), Mapping):
            raise CheckpointReadError(f"Checkpoint {filename} holds no model state dict.")
        return loaded

    # -------------------------------------------------------------------- matching

    def _load_model(self, checkpoint: dict):
        if self._skipping and self.reinitialize:
            state = checkpoint["model"]
            dropped = [
                k for k in state if matches_prefix(k.removeprefix("module."), self.reinitialize)
            ]
            for k in dropped:
                del state[k]
            self.logger.info(
                f"Not loaded from {self._current_file} (re-initialised for retraining): "
                f"{len(dropped)} tensors under {list(self.reinitialize)}"
            )
        source = checkpoint.get("efl_d2_source")
        model_state = self.model.state_dict()
        if source == "official":
            state, notes = adapt_to_model(checkpoint["model"], self.model)
            checkpoint["model"] = state
            for note in notes:
                self.logger.info(f"official checkpoint: {note}")
            has_stats = any(k in state for k in _EFL_BUFFERS)
            self._check(
                model_state,
                state,
                "Official EFL checkpoint " + self._current_file,
                ignore_missing=() if has_stats else _EFL_BUFFERS,
            )
            problems = check_official_architecture(self.model)
            if problems:
                self.logger.warning(
                    "The model differs from the official detector in ways that change what the "
                    "official weights compute:\n  - " + "\n  - ".join(problems)
                )
        elif source == "torchvision":
            prefix = checkpoint.get("efl_d2_resnet_prefix", "")
            self._check(
                model_state,
                checkpoint["model"],
                "torchvision ResNet checkpoint " + self._current_file,
                scope=prefix,
            )
        elif self.strict and not checkpoint.get("matching_heuristics", False):
            state = {(k.removeprefix("module.")): v for k, v in checkpoint["model"].items()}
            self._check(model_state, state, "Checkpoint " + self._current_file)
        return super()._load_model(checkpoint)

    def _check(self, model_state, ckpt_state, source, *, ignore_missing=(), scope=None) -> None:
        report = compare_state_dicts(
            model_state, ckpt_state, ignore_missing=ignore_missing, scope=scope
        )
        if any(report.values()):
            raise CheckpointMismatchError(format_mismatch(source, report, model_state))
