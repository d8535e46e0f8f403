"""Checks of a training / evaluation config that run before any process starts its first step.

On LVIS a misspelled test-set name would otherwise surface after 180k iterations, in the final
evaluation. :func:`check_run` looks at everything that can be checked without training and raises
one :class:`ConfigCheckError` listing every problem, in seconds: datasets registered and their files
present, names given as strings or sequences of strings, the model's class count equal to every
dataset's, the evaluator bound to the test set, the detection limits of model and evaluator equal,
the output directory writable, and the initial checkpoint readable and compatible with the model;
for a user's own data (``configs/custom/``), every record of its jsons and every image.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["ConfigCheckError", "ResumePoint", "check_run"]


class ConfigCheckError(ValueError):
    """A config that cannot run as given; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(problems)} problem(s) found before training/evaluation started:\n  - "
            + "\n  - ".join(problems)
        )


def _select(cfg, key: str):
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _names(cfg, key: str, problems: list[str]) -> list[str]:
    """The dataset names at ``key`` as a list; problems for anything but a str / sequence of str."""
    from ..data.datasets import split_into_characters

    value = _select(cfg, key)
    if value is None:
        return []
    if isinstance(value, str):
        if value.startswith("[") or "," in value:
            problems.append(
                f"{key}={value!r} is one string that looks like a list: give the name itself "
                f"({key}=name) or a real list ({key}='[name1,name2]' with the quotes)."
            )
            return []
        return [value]
    if isinstance(value, (list, tuple, ListConfig)) and all(isinstance(n, str) for n in value):
        if split_into_characters(value):
            problems.append(
                f"{key}={list(value)!r} is a string split into characters: "
                f"write ({''.join(value)!r},) with the trailing comma, or the plain string."
            )
            return []
        return list(value)
    problems.append(f"{key} must be a dataset name or a list of names, got {value!r}.")
    return []


def _check_datasets(names: list[str], key: str, problems: list[str]) -> list[str]:
    """Problems for unregistered names or missing files; returns the registered names."""
    from ..data.custom import CUSTOM_SPLITS
    from ..data.datasets import _check_files

    registered = DatasetCatalog.list()
    ok = []
    for name in names:
        if name not in registered and name in CUSTOM_SPLITS:
            continue  # its custom.*_json is not set: custom_data_problems says so
        if name not in registered:
            similar = sorted(r for r in registered if _similar(name, r))
            problems.append(
                f"{key}: dataset {name!r} is not registered."
                + (f" Did you mean one of {similar}?" if similar else "")
                + " (efl_d2 registers mini_lvis_v1_train / mini_lvis_v1_val; detectron2 the "
                "builtin lvis_v1_train / lvis_v1_val.)"
            )
            continue
        meta = MetadataCatalog.get(name)
        json_file = getattr(meta, "json_file", None)
        if json_file is not None and name not in CUSTOM_SPLITS:  # custom: custom_data_problems
            try:
                _check_files(name, json_file, getattr(meta, "image_root", ""))
            except FileNotFoundError as e:
                problems.append(f"{key}: {e}")
        ok.append(name)  # class counts may still be known (detectron2's builtin LVIS metadata)
    return ok


def _similar(name: str, other: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, name, other).ratio() > 0.75


#: Where a user's own data goes (the hint of the problems below).
_OWN_DATA_HINT = (
    "Train on your own COCO- or LVIS-format data with configs/custom/atss_efl_R18.py (or _R50.py) "
    "and custom.train_json=... custom.train_images=... custom.val_json=... custom.val_images=...: "
    "the classes and groups come from the json (README, 'Your own data')."
)


def _num_classes(name: str, problems: list[str]) -> int | None:
    from ..data.datasets import DatasetFileError

    meta = MetadataCatalog.get(name)
    try:
        num_classes = len(meta.thing_classes)
    except DatasetFileError as e:
        problems.append(str(e))
        return None
    except AttributeError:  # (a missing annotation file is reported by _check_datasets)
        own_file = os.path.isfile(getattr(meta, "json_file", None) or "")
        if own_file and getattr(meta, "evaluator_type", None) in ("lvis", "coco"):
            problems.append(
                f"dataset {name!r} has no class names (thing_classes). " + _OWN_DATA_HINT
            )
        return None
    if num_classes == 1203 and not name.startswith("lvis_") and hasattr(meta, "json_file"):
        _check_lvis_v1_names_given_to_other_data(name, meta, problems)
    return num_classes


def _check_lvis_v1_names_given_to_other_data(name: str, meta, problems: list[str]) -> None:
    """Detectron2 gives any LVIS dataset whose name contains "v1" LVIS v1's 1203 class names:
    a user's file registered so would train and label boxes with LVIS's names."""
    from ..data.datasets import read_json

    try:
        categories = read_json(meta.json_file).get("categories", [])
    except (OSError, ValueError, AttributeError):
        return  # the file's own problems are reported where it is read
    if len(categories) != 1203:
        problems.append(
            f"dataset {name!r} has LVIS v1's 1203 class names, which Detectron2 gives any dataset "
            f"whose name contains 'v1', but {meta.json_file} has {len(categories)} categories. "
            + _OWN_DATA_HINT
        )


def _walk(node, path: str) -> Iterator[tuple[str, object]]:
    """(dotted key, value) of every leaf under a config node."""
    if isinstance(node, DictConfig):
        for k in node:
            yield from _walk(node[k], f"{path}.{k}")
    elif isinstance(node, ListConfig):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}.{i}")
    else:
        yield path, node


def _model_values(cfg, leaf: str) -> dict[str, object]:
    return {k: v for k, v in _walk(cfg.model, "model") if k.rsplit(".", 1)[-1] == leaf}


def _check_classes(cfg, names: list[str], problems: list[str]) -> None:
    counts = {n: c for n in names if (c := _num_classes(n, problems)) is not None}
    if not counts:
        return
    by_value: dict[object, list[str]] = {}
    for key, value in _model_values(cfg, "num_classes").items():
        by_value.setdefault(value, []).append(key)
    for value, keys in by_value.items():
        keys.sort(key=lambda k: (k.count("."), k))  # model.num_classes first
        wrong = {n: c for n, c in counts.items() if c != value}
        if wrong:
            problems.append(
                f"{keys[0]}={value}"
                + (f" (and {', '.join(keys[1:])})" if len(keys) > 1 else "")
                + ", but "
                + ", ".join(f"dataset {n!r} has {c} classes" for n, c in wrong.items())
                + f": set model.num_classes={next(iter(wrong.values()))}."
            )


def _check_evaluator(cfg, test_names: list[str], problems: list[str]) -> None:
    ev = _select(cfg, "dataloader.evaluator")
    if ev is None or not test_names:
        return
    bound = _select(cfg, "dataloader.evaluator.dataset_name")
    if bound is not None and (not isinstance(bound, str) or bound not in test_names):
        problems.append(
            f"dataloader.evaluator.dataset_name={bound!r} is not the test set {test_names}"
            + (
                " (it resolves to a list: give dataloader.test.dataset.names a single name, "
                "e.g. dataloader.test.dataset.names=mini_lvis_v1_val)"
                if not isinstance(bound, str)
                else ""
            )
            + "."
        )
    _check_evaluator_format(cfg, test_names, problems)
    protocol = _select(cfg, "dataloader.evaluator.protocol") or "standard"
    if protocol != "standard":
        if not _select(cfg, "model.test_topk_per_class"):
            problems.append(
                f"dataloader.evaluator.protocol={protocol} scores the best detections of every "
                "class over the dataset, but the model keeps the standard 300 boxes per image: "
                f"use tools/train_net.py --eval-protocol {protocol} (it sets both)."
            )
        return  # no per-image limit to match
    limit = _select(cfg, "dataloader.evaluator.max_dets_per_image")
    per_image = {
        **_model_values(cfg, "max_detections_per_image"),
        **_model_values(cfg, "test_topk_per_image"),
    }
    for key, value in per_image.items():
        if limit is not None and value != limit:
            problems.append(
                f"{key}={value} but dataloader.evaluator.max_dets_per_image={limit}: the LVIS "
                "protocol scores up to the evaluator's limit per image; make them equal (300)."
            )


def _check_evaluator_format(cfg, test_names: list[str], problems: list[str]) -> None:
    """An LVIS evaluator on data that is not LVIS format would fail after training."""
    target = _select(cfg, "dataloader.evaluator._target_")
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    if not name.endswith("LVISEvaluator"):
        return
    for test in test_names:
        kind = getattr(MetadataCatalog.get(test), "evaluator_type", None)
        if test in DatasetCatalog.list() and kind not in (None, "lvis"):
            problems.append(
                f"dataloader.evaluator is an LVISEvaluator, but dataset {test!r} is "
                f"{kind!r} data, which it cannot score. " + _OWN_DATA_HINT
            )


def _check_output_dir(path: str, problems: list[str]) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as e:
        problems.append(f"train.output_dir={path!r} is not writable ({e}).")


def _check_init_checkpoint(cfg, problems: list[str]) -> None:
    from ..checkpoint import CheckpointMismatchError, CheckpointReadError, EFLCheckpointer

    path = cfg.train.get("init_checkpoint", "")
    if not path or "://" in path:  # remote files are fetched (and checked) when loaded
        return
    if not os.path.isfile(path):
        problems.append(f"train.init_checkpoint={path!r} does not exist.")
        return
    try:
        model = instantiate(cfg.model)
    except Exception as e:  # noqa: BLE001  (any construction error is a config problem)
        problems.append(f"model: cannot be built ({type(e).__name__}: {e}).")
        return
    try:
        EFLCheckpointer(model).load(path)
    except (CheckpointMismatchError, CheckpointReadError) as e:
        problems.append(f"train.init_checkpoint: {e}")


@dataclass
class ResumePoint:
    """The checkpoint a ``--resume`` continues from and how the new config differs from its
    run's: ``differences`` are (dotted key, old value, new value); None when the checkpoint
    records no config (written before efl_d2 recorded it)."""

    checkpoint: str
    iteration: int
    old_config: str | None
    differences: list | None


def check_run(
    cfg,
    *,
    eval_only: bool,
    resume: bool,
    allow_random_weights: bool = False,
    allow_config_change: bool = False,
) -> ResumePoint | None:
    """Raise :class:`ConfigCheckError` listing every problem of ``cfg`` for this run; returns
    the :class:`ResumePoint` of a resumed run (None for a new one).

    Args:
        cfg: the loaded LazyConfig (overrides applied).
        eval_only: the run only evaluates ``train.init_checkpoint`` (which is then required,
            unless ``allow_random_weights``).
        resume: a checkpoint in ``train.output_dir`` replaces ``train.init_checkpoint``.
        allow_config_change: a resume may change what training computes (see
            :mod:`.resume_config`); without it such a change is a problem listing the differences.
    """
    problems: list[str] = []
    train_key, test_key = "dataloader.train.dataset.names", "dataloader.test.dataset.names"
    train_names = [] if eval_only else _names(cfg, train_key, problems)
    test_names = _names(cfg, test_key, problems) if "evaluator" in cfg.dataloader else []
    if "custom" in cfg:  # a user's own data: every record and image
        from ..data.custom import custom_data_problems

        problems += custom_data_problems(cfg, need_train=not eval_only, need_val=bool(test_names))
    registered = _check_datasets(train_names, train_key, problems)
    registered += _check_datasets(test_names, test_key, problems)
    _check_classes(cfg, registered, problems)
    _check_evaluator(cfg, test_names, problems)
    _check_output_dir(cfg.train.output_dir, problems)
    resumes = resume and _has_checkpoint(cfg.train.output_dir)
    if eval_only and not cfg.train.get("init_checkpoint") and not allow_random_weights:
        problems.append(
            "--eval-only needs weights: set train.init_checkpoint=/path/to/model_final.pth "
            "(or pass --allow-random-weights to evaluate an untrained model on purpose)."
        )
    elif not resumes:
        _check_init_checkpoint(cfg, problems)
    point = _resume_point(cfg, allow_config_change, problems) if resumes and not eval_only else None
    if problems:
        raise ConfigCheckError(problems)
    return point


def _resume_point(cfg, allow_config_change: bool, problems: list[str]) -> ResumePoint | None:
    from .resume_config import (
        affects_training,
        checkpointed_config,
        config_differences,
        config_yaml,
        format_differences,
    )

    found = checkpointed_config(cfg.train.output_dir)
    if found is None:
        return None  # none reads: the resume itself says so, naming each file
    path, iteration, old = found
    new = config_yaml(cfg)
    diffs = config_differences(old, new) if old is not None and new is not None else None
    refused = [d for d in diffs or [] if affects_training(d[0])]
    if refused and not allow_config_change:
        problems.append(
            f"--resume: the config differs from the one of the run checkpointed in {path} "
            f"(iteration {iteration}) in what training computes, which the resumed run would not "
            "honour exactly:\n      "
            + "\n      ".join(format_differences(refused))
            + "\n    Resume with the run's own config (it is in the checkpoint; config.yaml "
            "in the folder holds it too), or pass --allow-config-change to apply the new config "
            f"from iteration {iteration + 1} on (both configs are then kept in the folder)."
        )
    return ResumePoint(path, iteration, old, diffs)


def _has_checkpoint(output_dir: str) -> bool:
    return os.path.isdir(output_dir) and any(f.endswith(".pth") for f in os.listdir(output_dir))
