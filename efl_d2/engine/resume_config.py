"""``--resume`` against the config that the checkpointed run used.

Detectron2 resumes with whatever config it is given and half-applies a changed one: the optimizer
and schedule state in the checkpoint win over a new ``optimizer.lr`` while ``config.yaml`` is
rewritten to claim it, and a new ``train.max_iter`` plans the schedule over one length up to the
checkpoint and another after it. Here every checkpoint carries its run's config
(:class:`RunConfigRecord`, a checkpointable), and a resume compares it with the new one:

- a change that affects training (anything but the keys of :func:`affects_training`'s
  exceptions: logging, checkpoint and evaluation periods, the test set and evaluator, inference
  settings, loader worker count) is refused with the list of differences, unless the user passes
  ``--allow-config-change``; the resumed run then applies the new config from the resumed
  iteration on (the new optimizer hyper-parameters included, :func:`apply_new_hyperparameters`);
- with any difference, the checkpointed config is kept as ``config.before_iter_<k>.yaml`` next to
  the new ``config.yaml`` and the log says what changed at which iteration, so that no file
  claims a value that was not used.
"""

from __future__ import annotations

import logging
import os
import tempfile

import yaml
from detectron2.config import LazyConfig

from .._atomic import atomic_write_text

__all__ = [
    "RunConfigRecord",
    "affects_training",
    "apply_new_hyperparameters",
    "checkpointed_config",
    "config_differences",
    "config_yaml",
    "format_differences",
    "keep_previous_config",
    "previous_config_path",
]

logger = logging.getLogger("efl_d2")

# keys whose change a resumed run honours exactly: they do not enter any training step
_NEUTRAL_PREFIXES = (
    "train.output_dir",
    "train.init_checkpoint",  # a resume loads the output folder's checkpoint instead
    "train.log_period",
    "train.eval_period",
    "train.checkpointer.",
    "train.vis_images",
    "dataloader.test.",
    "dataloader.evaluator.",
    "dataloader.train.num_workers",  # efl_d2's loader gives the same batches for any count
)


def affects_training(key: str) -> bool:
    """Whether a change of the dotted config ``key`` changes what training computes: everything
    but logging/checkpoint/evaluation settings and the model's inference-only keys (``test_*``,
    ``max_detections_per_image``)."""
    if key.startswith(_NEUTRAL_PREFIXES):
        return False
    leaf = key.rsplit(".", 1)[-1]
    return not (key.startswith("model.") and leaf.startswith(("test_", "max_det")))


class RunConfigRecord:
    """A checkpointable holding the run's config as yaml text: saved in every checkpoint,
    read back by :func:`checkpointed_config`."""

    def __init__(self, yaml_text: str | None) -> None:
        self.yaml_text = yaml_text

    def state_dict(self) -> dict:
        return {"yaml": self.yaml_text} if self.yaml_text else {}

    def load_state_dict(self, state: dict) -> None:
        pass  # the resumed run records its own (possibly changed, on purpose) config


def config_yaml(cfg) -> str | None:
    """``cfg`` as ``LazyConfig.save`` writes it (what ``config.yaml`` holds); None when it cannot
    be written as yaml (a config with lambdas or other objects yaml does not hold)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        LazyConfig.save(cfg, path)
        if not os.path.isfile(path) or os.path.isfile(path + ".pkl"):
            return None
        with open(path) as f:
            return f.read()


def checkpointed_config(output_dir: str) -> tuple[str, int, str | None] | None:
    """(checkpoint file, its iteration, its run's config yaml or None) of the checkpoint that
    ``--resume`` would continue from in ``output_dir``; None if there is no readable one."""
    import torch

    from ..checkpoint import CheckpointReadError, EFLCheckpointer
    from ..checkpoint.formats import load_checkpoint_file

    for path in EFLCheckpointer(torch.nn.Module(), output_dir).resume_candidates():
        try:
            data = load_checkpoint_file(path)
        except (CheckpointReadError, RuntimeError):
            continue  # the resume skips it too, with a warning
        if isinstance(data, dict) and "iteration" in data:
            record = data.get("run_config") or {}
            return path, int(data["iteration"]), record.get("yaml")
    return None


class _YamlLoader(yaml.SafeLoader):
    """Safe yaml that reads the ``!!python/object`` values of a saved config (e.g. detectron2's
    ``ShapeSpec``) as plain data to compare, without building the objects."""


def _python_value(loader, suffix: str, node):
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return {"python/" + suffix: value}


_YamlLoader.add_multi_constructor("tag:yaml.org,2002:python/", _python_value)


def _leaves(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(old_yaml: str, new_yaml: str) -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) of every leaf that differs; a key missing on one side
    has the value ``"<absent>"`` there. Lists are compared whole."""
    old = _leaves(yaml.load(old_yaml, Loader=_YamlLoader) or {})
    new = _leaves(yaml.load(new_yaml, Loader=_YamlLoader) or {})
    absent = "<absent>"
    return [
        (k, old.get(k, absent), new.get(k, absent))
        for k in sorted(old.keys() | new.keys())
        if old.get(k, absent) != new.get(k, absent)
    ]


def format_differences(diffs: list[tuple[str, object, object]]) -> list[str]:
    return [f"{k}: {old!r} -> {new!r}" for k, old, new in diffs]


def previous_config_path(output_dir: str, iteration: int) -> str:
    """Where the config of the iterations before ``iteration`` is kept after a config change."""
    return os.path.join(output_dir, f"config.before_iter_{iteration:07d}.yaml")


def keep_previous_config(output_dir: str, iteration: int, old_yaml: str) -> str:
    """Write the checkpointed run's config to :func:`previous_config_path`; returns the path."""
    path = previous_config_path(output_dir, iteration)
    atomic_write_text(path, old_yaml)
    return path


def apply_new_hyperparameters(optimizer, new_groups: list[dict]) -> None:
    """After loading a checkpoint's optimizer state, put back the hyper-parameters of the new
    config (``new_groups``: the param groups of the freshly built optimizer, without "params"),
    the learning rate as the schedule's base (``initial_lr``, from which detectron2's
    ``LRMultiplier`` computes every later lr)."""
    if len(new_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"the new config's optimizer has {len(new_groups)} parameter groups, the checkpoint's "
            f"{len(optimizer.param_groups)}: they cannot be matched."
        )
    for group, new in zip(optimizer.param_groups, new_groups):
        group.update({k: v for k, v in new.items() if k != "params"})
        group["initial_lr"] = new["lr"]
