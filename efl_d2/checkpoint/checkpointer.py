"""``EFLCheckpointer``: detectron2's ``DetectionCheckpointer`` that also reads foreign checkpoints.

Formats recognised by content (not by file name, :mod:`.formats`), so ``train.init_checkpoint=``
can point at any:

- detectron2 checkpoints (``.pth`` from ``DetectionCheckpointer.save``, model-zoo ``.pkl``):
  loaded exactly as detectron2 does; with ``strict=True`` any missing / unexpected / mis-shaped
  key is an error instead of a warning.
- torchvision ResNet ImageNet weights (e.g. ``resnet50-0676ba61.pth``): renamed to the model's
  ``...bottom_up.`` ResNet (:mod:`efl_d2.checkpoint.torchvision`). Every ResNet parameter must
  match; the rest of the detector keeps its initialisation.
- official EFL release (United-Perception ``.pth``, any top-level layout, with or without
  ``module.``) and files written by ``tools/convert_official_to_d2.py``: converted and adapted to
  the model (:mod:`efl_d2.official`); always strict, and architecture differences that change the
  computation are logged.

A mismatch raises :class:`~.state_diff.CheckpointMismatchError` listing every key that did not
match, with a hint for the usual cause (class count); a file that cannot be read at all (empty,
truncated, not a checkpoint) raises :class:`~.formats.CheckpointReadError` naming the file.

Saving is atomic (temporary file, flush + fsync, rename; ``last_checkpoint`` is written the same way
and only after the checkpoint is complete), and ``resume_or_load(..., resume=True)`` resumes from
the newest checkpoint of ``save_dir`` that reads, saying which ones it skipped and why. A new run
leaves the modules of ``reinitialize`` at their constructor's values (decoupled training).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping

import torch
from detectron2.checkpoint import DetectionCheckpointer

from .._atomic import TMP_MARK, atomic_write
from ..official.target_model import adapt_to_model, check_official_architecture
from .formats import CheckpointReadError, interpret_checkpoint, load_checkpoint_file
from .state_diff import check_state_dict

__all__ = ["EFLCheckpointer", "matches_prefix"]

_EFL_BUFFERS = tuple(f"cls_loss.{b}" for b in ("pos_grad", "neg_grad", "pos_neg"))


def matches_prefix(name: str, prefixes) -> bool:
    """Whether the parameter / module ``name`` is ``p`` or lies under ``p.`` for a prefix p (the
    modules of ``EFLCheckpointer``'s ``reinitialize`` and of decoupled training's ``retrain_only``).
    """
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _checkpoint_iteration(file_name: str) -> float:
    """Sort key of a periodic checkpoint name: its iteration; ``*_final.pth`` after all."""
    if file_name.endswith("_final.pth"):
        return float("inf")
    m = re.search(r"_(\d+)\.pth$", file_name)
    return int(m.group(1)) if m else -1.0


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
        reinitialize: Iterable[str] = (),
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
            reinitialize: module prefixes that a new run (not a resumed one) does not load from
                its initial checkpoint: decoupled training's re-initialised classifier
                (:mod:`efl_d2.engine.decoupled`).
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.official_cls_layout = official_cls_layout
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.reinitialize = tuple(reinitialize)
        #: the checkpoint the last ``resume_or_load`` resumed from; None for a new run
        self.resumed_from: str | None = None

    # -------------------------------------------------------------------- reading

    def _torch_load(self, f):
        return load_checkpoint_file(f, allow_unsafe_pickle=self.allow_unsafe_pickle)

    def _load_file(self, filename: str) -> dict:
        loaded = self._interpret(super()._load_file(filename), filename)
        if not isinstance(loaded.get("model"), Mapping):
            raise CheckpointReadError(f"Checkpoint {filename} holds no model state dict.")
        return loaded

    def _interpret(self, loaded: dict, name: str) -> dict:
        return interpret_checkpoint(
            loaded, name, self.model, official_cls_layout=self.official_cls_layout, log=self.logger
        )

    def load(self, path, *args, **kwargs):
        try:
            return super().load(path, *args, **kwargs)
        finally:  # detectron2 leaves this set when loading raises, failing every later load
            self._parsed_url_during_load = None

    def load_checkpoint_dict(self, checkpoint: dict, name: str = "<in-memory checkpoint>"):
        """Load an already-read checkpoint (any supported format, e.g. a bare state dict) into
        the model, with the same conversions and checks as :meth:`load`. Returns the
        incompatible keys (detectron2-format checkpoints, non-strict)."""
        loaded = checkpoint if isinstance(checkpoint.get("model"), dict) else {"model": checkpoint}
        incompatible = self._load_model(self._interpret(loaded, name))
        if incompatible is not None:
            self._log_incompatible_keys(incompatible)
        return incompatible

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
        model from ``path``, without the :attr:`reinitialize` modules. Raises
        :class:`CheckpointReadError` when checkpoints exist but none reads (silently starting over
        would waste the run)."""
        self.resumed_from = None
        if not resume:
            return self._load_initial(path)
        self._remove_stale_temporaries()
        candidates = self.resume_candidates()
        skipped = []
        for candidate in candidates:
            try:  # a file is read whole before anything is loaded into the model
                checkpoint = self.load(candidate)
            except CheckpointReadError as e:
                skipped.append(str(e))
                self.logger.warning(f"--resume: skipping {candidate}: {e}")
                continue
            if skipped:
                self.logger.warning(
                    f"--resume: resumed from {candidate} after skipping {len(skipped)} unreadable "
                    "checkpoint(s)."
                )
            self.resumed_from = candidate
            return checkpoint
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
        loader = self
        if self.reinitialize:
            loader = _InitialWeightsLoader(
                self.model,
                strict=self.strict,
                official_cls_layout=self.official_cls_layout,
                allow_unsafe_pickle=self.allow_unsafe_pickle,
                reinitialize=self.reinitialize,
            )
        return loader.load(path, checkpointables=[])

    def _remove_stale_temporaries(self) -> None:
        if not self.save_to_disk or "://" in self.save_dir or not os.path.isdir(self.save_dir):
            return
        for f in os.listdir(self.save_dir):
            if TMP_MARK in f:
                self.logger.warning(
                    f"Removing {f} in {self.save_dir}: a save that was interrupted left it."
                )
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.save_dir, f))

    # -------------------------------------------------------------------- matching

    def _load_model(self, checkpoint: dict):
        source = checkpoint.get("efl_d2_source")
        name = checkpoint.get("efl_d2_file", "checkpoint")
        model_state = self.model.state_dict()
        if source == "official":
            state, notes = adapt_to_model(checkpoint["model"], self.model)
            checkpoint["model"] = state
            for note in notes:
                self.logger.info(f"official checkpoint: {note}")
            has_stats = any(k in state for k in _EFL_BUFFERS)
            check_state_dict(
                model_state,
                state,
                "Official EFL checkpoint " + name,
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
            check_state_dict(
                model_state,
                checkpoint["model"],
                "torchvision ResNet checkpoint " + name,
                scope=prefix,
            )
        elif self.strict and not checkpoint.get("matching_heuristics", False):
            state = {(k.removeprefix("module.")): v for k, v in checkpoint["model"].items()}
            check_state_dict(model_state, state, "Checkpoint " + name)
        return super()._load_model(checkpoint)


class _InitialWeightsLoader(EFLCheckpointer):
    """Loads a new run's initial weights: every checkpoint without the :attr:`reinitialize`
    modules, which keep the model's (constructor's) values."""

    def _load_model(self, checkpoint: dict):
        state = checkpoint["model"]
        dropped = [k for k in state if matches_prefix(k.removeprefix("module."), self.reinitialize)]
        for k in dropped:
            del state[k]
        self.logger.info(
            f"Not loaded from {checkpoint.get('efl_d2_file', 'checkpoint')} (re-initialised for "
            f"retraining): {len(dropped)} tensors under {list(self.reinitialize)}"
        )
        return super()._load_model(checkpoint)
