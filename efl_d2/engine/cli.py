"""From ``tools/train_net.py``'s command line to a config: its arguments and strict overrides."""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
import sys

from detectron2.config import LazyConfig
from detectron2.engine import default_argument_parser
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

from .eval_protocol import set_eval_protocol
from .preflight import ConfigCheckError

__all__ = ["apply_overrides_strict", "load_config", "parse_args", "prepare_config"]

_MISSING = object()
# a ``key=value`` override (``+key=v`` / ``++key=v`` adds, ``~key`` deletes), as opposed to a flag
# or a flag's value
_OVERRIDE = re.compile(r"^(~[\w.]+|(\+\+|\+)?[A-Za-z_][\w.]*=)")


def parse_args(argv: list[str] | None = None, epilog: str | None = None) -> argparse.Namespace:
    """detectron2's training arguments plus ``--eval-protocol`` and ``--allow-random-weights``.
    Flags may also come after the ``key=value`` overrides (``... train.max_iter=20 --resume``)."""
    parser = default_argument_parser(epilog=epilog)
    parser.add_argument(
        "--eval-protocol",
        choices=("standard", "fixed", "pooled"),
        default="standard",
        help="LVIS box AP protocol: standard, fixed (AP-fixed) or pooled (AP-pool) of Dave et "
        "al. 2021; the last two also make the detector keep the best boxes of every class",
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="let --resume continue with a config that changes what training computes (lr, "
        "schedule, batch, data, model): applied from the resumed iteration on, both configs kept",
    )
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="let --eval-only evaluate a model without train.init_checkpoint (random weights)",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    # detectron2's ``opts`` (argparse.REMAINDER) would swallow every flag after the first
    # override: the overrides are set apart first
    args = parser.parse_args([t for t in argv if not _OVERRIDE.match(t)])
    args.opts = [*(args.opts or []), *(t for t in argv if _OVERRIDE.match(t))]
    return args


def load_config(args):
    """The config of ``args.config_file`` (a path, or a path relative to ``configs/`` as
    :func:`efl_d2.model_zoo.get_config_file` takes) with ``--eval-protocol`` and ``args.opts``
    applied (:func:`apply_overrides_strict`; the overrides win). Any problem with the file, the
    protocol or the overrides is a :class:`ConfigCheckError` (``tools/train_net.py``: exit 2)."""
    try:
        if not os.path.isfile(args.config_file):
            from ..model_zoo import get_config_file

            args.config_file = get_config_file(args.config_file)  # default_setup reads it too
        cfg = LazyConfig.load(args.config_file)
    except Exception as e:  # a missing file, or an error running the config
        raise ConfigCheckError(
            [f"--config-file {args.config_file}: {type(e).__name__}: {e}"]
        ) from e
    try:
        set_eval_protocol(cfg, getattr(args, "eval_protocol", "standard"))
    except ValueError as e:
        raise ConfigCheckError([str(e)]) from e
    return prepare_config(cfg, args.opts)


def prepare_config(cfg, overrides: list[str]):
    """``cfg`` with the command line's ``key=value`` overrides applied strictly
    (:func:`apply_overrides_strict`) and its own data registered: a ``configs/custom/`` config's
    ``custom.*`` files become the datasets ``custom_train`` / ``custom_val`` and give the class
    count (:func:`efl_d2.data.custom.register_custom_data`). What every tool that takes a config
    and overrides runs; problems are a :class:`ConfigCheckError`."""
    from ..data.custom import CustomDataError, register_custom_data

    cfg = apply_overrides_strict(cfg, overrides)
    try:
        register_custom_data(cfg)
    except CustomDataError as e:
        raise ConfigCheckError(e.problems) from e
    return cfg


def _is_argument(node, leaf: str) -> bool:
    """Whether ``leaf`` is a keyword argument of the LazyCall ``node``'s target (a key that the
    config does not state but its callable takes, e.g. LVISEvaluator's ``scorer``)."""
    target = node.get("_target_") if OmegaConf.is_dict(node) else None
    if isinstance(target, str):
        target = locate(target)
    try:
        param = inspect.signature(target).parameters.get(leaf)
    except (TypeError, ValueError):  # no target, or one without a signature
        return False
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)


def apply_overrides_strict(cfg, overrides: list[str]):
    """``LazyConfig.apply_overrides`` that refuses keys the config does not have.

    detectron2 silently adds a mistyped key (``train.max_itr=10`` trains for the default length).
    Here it is a :class:`ConfigCheckError` naming the closest valid keys (every unknown key of
    the command line in one message). A key the config leaves at its callable's default is known
    too (``dataloader.evaluator.scorer=detectron2``: an argument of the evaluator); prefix a key
    with ``+`` to add any other on purpose.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigCheckError([f"cannot parse the overrides {overrides}: {e}"]) from e
    problems = [p for o in parsed if (p := _unknown_key_problem(cfg, o)) is not None]
    if problems:
        raise ConfigCheckError(problems)
    try:
        return LazyConfig.apply_overrides(cfg, overrides)
    except Exception as e:  # e.g. a key under a value that is not a node
        raise ConfigCheckError([f"cannot apply the overrides {overrides}: {e}"]) from e


def _unknown_key_problem(cfg, override) -> str | None:
    key = override.key_or_group
    if override.is_add() or OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
        return None
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if _is_argument(node, leaf):
        return None
    keys = list(node.keys()) if OmegaConf.is_dict(node) else []
    close = difflib.get_close_matches(leaf, keys, n=3)
    return (
        f"unknown config key {key!r} in the override {override.input_line!r}"
        + (
            f"; did you mean {' or '.join((parent + '.' if parent else '') + c for c in close)}?"
            if close
            else f"; the keys under {parent or 'the root'!r} are {sorted(keys)}."
        )
        + f" (To add a new key on purpose: '+{key}=...'.)"
    )
