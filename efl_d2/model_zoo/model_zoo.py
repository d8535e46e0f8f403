"""Model-zoo API in the style of ``detectron2.model_zoo``, for efl_d2's ``configs/`` tree.

    from efl_d2 import model_zoo
    cfg = model_zoo.get_config("mini_lvis/fcos_R18.py")
    model = model_zoo.get("mini_lvis/fcos_R18.py", weights="output/model_final.pth")

Config paths are relative to the repository's ``configs/`` directory (extension optional); a path
to an existing config file (e.g. a run's ``output/config.yaml``) works too. Where the configs
live: ``efl_d2/model_zoo/configs`` when the package was installed with its configs (a copy or
symlink made at install time, as detectron2 does), else the ``configs/`` directory next to the
``efl_d2`` package (source checkout / editable install), found with ``importlib.resources``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import torch
from detectron2.config import LazyConfig, instantiate

from ..checkpoint import EFLCheckpointer
from ..official import OFFICIAL_EFL_R50_URL, use_official_architecture, use_official_inference

__all__ = [
    "OFFICIAL_EFL_R50_CONFIG",
    "CheckpointEntry",
    "build_model",
    "configs_root",
    "get",
    "get_checkpoint_entry",
    "get_checkpoint_url",
    "get_config",
    "get_config_file",
    "list_configs",
]

_CONFIG_EXTENSIONS = (".py", ".yaml")


@dataclass(frozen=True)
class CheckpointEntry:
    """Released weights of one config.

    Attributes:
        url: where the file is (anything detectron2's ``PathManager`` opens).
        source: "efl_d2" (trained with this project, detectron2 format) or "official" (the paper
            authors' United-Perception release: converted when loaded, and the config is switched
            to the official architecture by :func:`get_config`).
        note: what a user should know (numbers, provenance).
    """

    url: str
    source: str
    note: str = ""


# The config of the paper's improved-baseline EFL R-50 row (Table 2 / 3 / 4 s=8 / 5 last row).
# Re-point it if the row's file is renamed.
OFFICIAL_EFL_R50_CONFIG = "LVIS/atss_improved_R50_2x_efl"


class _ModelZooUrls:
    """Catalog: config path without extension -> :class:`CheckpointEntry`.

    No efl_d2-trained weights have been released yet. The only entry is the official release of
    the improved-baseline EFL R-50 (LVIS v1 val box AP 27.5 in the paper), which is a
    United-Perception checkpoint, not an efl_d2 one: it is converted on load (names, anchor order,
    channel layout; see efl_d2.official.conversion) into the official architecture. Its AP under
    efl_d2's evaluation has not been measured here (no downloads on the development machines).
    """

    CONFIG_PATH_TO_CHECKPOINT: ClassVar[dict[str, CheckpointEntry]] = {
        OFFICIAL_EFL_R50_CONFIG: CheckpointEntry(
            url=OFFICIAL_EFL_R50_URL,
            source="official",
            note=(
                "Official EFL release (ModelTC United-Perception 0.1.0, paper: 27.5 AP on LVIS v1 "
                "val); converted when loaded and run with the official test pipeline; not "
                "re-evaluated with efl_d2."
            ),
        ),
    }

    @classmethod
    def query(cls, config_path: str) -> CheckpointEntry | None:
        return cls.CONFIG_PATH_TO_CHECKPOINT.get(_strip_extension(config_path))


def _strip_extension(path: str) -> str:
    for ext in _CONFIG_EXTENSIONS:
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def configs_root() -> Path:
    """The directory holding efl_d2's config tree (see the module docstring)."""
    packaged = resources.files("efl_d2.model_zoo") / "configs"
    if packaged.is_dir():
        return Path(str(packaged)).resolve()  # in a checkout: the link to configs/
    checkout = Path(str(resources.files("efl_d2"))).parent / "configs"
    if checkout.is_dir():
        return checkout
    raise RuntimeError(
        "efl_d2's configs/ directory was not found: neither efl_d2/model_zoo/configs (installed "
        f"package data) nor {checkout} (source checkout). Install efl_d2 from its repository "
        "(`pip install -e .`)."
    )


def list_configs() -> list[str]:
    """Every config path (relative to :func:`configs_root`, with extension), sorted."""
    root = configs_root()
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix in _CONFIG_EXTENSIONS and "__pycache__" not in p.parts
    )


def get_config_file(config_path: str) -> str:
    """Absolute path of a config.

    Args:
        config_path: relative to efl_d2's ``configs/`` (e.g. "mini_lvis/fcos_R18.py"; the
            extension may be left out), or the path of an existing config file.

    Raises:
        RuntimeError: if there is no such config (the message lists close matches).
    """
    root = configs_root()
    candidates = [config_path] + (
        []
        if config_path.endswith(_CONFIG_EXTENSIONS)
        else [config_path + e for e in _CONFIG_EXTENSIONS]
    )
    for c in candidates:
        if (root / c).is_file():
            return str(root / c)
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c)
    known = list_configs()
    close = difflib.get_close_matches(config_path, known, n=3, cutoff=0.4)
    raise RuntimeError(
        f"{config_path!r} is neither a config in efl_d2's model zoo ({root}) nor an existing file."
        + (f" Did you mean: {', '.join(close)}?" if close else "")
        + f" Available configs: {', '.join(known)}"
    )


def get_checkpoint_entry(config_path: str) -> CheckpointEntry:
    """The catalog entry of a config (path without or with extension).

    Raises:
        RuntimeError: if no weights are released for it.
    """
    entry = _ModelZooUrls.query(config_path)
    if entry is None:
        raise RuntimeError(
            f"{config_path!r} has no released weights in efl_d2's model zoo. Configs with weights: "
            f"{sorted(_ModelZooUrls.CONFIG_PATH_TO_CHECKPOINT)}. Train it with tools/train_net.py, "
            "then load your checkpoint with get(..., weights=path)."
        )
    return entry


def get_checkpoint_url(config_path: str) -> str:
    """URL of the released weights of a config (see :class:`_ModelZooUrls`)."""
    return get_checkpoint_entry(config_path).url


def get_config(config_path: str, trained: bool = False):
    """Load a config of efl_d2's model zoo (a LazyConfig ``DictConfig``).

    Args:
        config_path: see :func:`get_config_file`.
        trained: set ``train.init_checkpoint`` to the catalog's weights. For the official release
            the config is also switched to the official architecture and test pipeline
            (:func:`efl_d2.official.use_official_architecture`,
            :func:`efl_d2.official.use_official_inference`: OpenCV resize, padding to 64,
            the release's NMS, clipping and result boxes). If False, the config's own
            ``train.init_checkpoint`` (typically ImageNet weights) stays.
    """
    cfg = LazyConfig.load(get_config_file(config_path))
    if trained:
        entry = get_checkpoint_entry(config_path)
        if "train" not in cfg or "init_checkpoint" not in cfg.train:
            raise RuntimeError(f"{config_path!r} has no train.init_checkpoint to set.")
        if entry.source == "official":
            use_official_inference(use_official_architecture(cfg))
        cfg.train.init_checkpoint = entry.url
    return cfg


def get(
    config_path: str,
    trained: bool = False,
    device: str | None = None,
    *,
    weights: str | None = None,
    official_cls_layout: str = "anchor_major",
) -> torch.nn.Module:
    """Build a model of efl_d2's model zoo, ready to run.

    Args:
        config_path: see :func:`get_config_file`.
        trained: load the catalog's released weights (:func:`get_checkpoint_url`).
        device: e.g. "cpu" or "cuda"; default CUDA when available.
        weights: load this checkpoint instead (path or URL, any format
            :class:`~efl_d2.checkpoint.EFLCheckpointer` reads).
        official_cls_layout: class-logit channel layout of an official-format checkpoint:
            "anchor_major" (the release, paper-era code) or "class_major" (files used with the
            later ``class_first`` post-process); it cannot be read from the file.

    Returns:
        the model in **eval mode** (unlike detectron2's ``model_zoo.get``), on ``device``. With
        ``trained`` or ``weights`` every parameter must come from the checkpoint (a mismatch
        raises :class:`~efl_d2.checkpoint.CheckpointMismatchError`); otherwise only the config's
        ``train.init_checkpoint`` (ImageNet weights, if any) is loaded, as detectron2 does.

    Example::

        model = model_zoo.get("mini_lvis/fcos_R18.py", weights="output/model_final.pth")
        outputs = model([{"image": chw_tensor}])
    """
    cfg = get_config(config_path, trained=trained)
    checkpoint = weights or (cfg.train.get("init_checkpoint", "") if "train" in cfg else "")
    return build_model(
        cfg,
        weights=checkpoint,
        device=device,
        strict=bool(trained or weights),
        official_cls_layout=official_cls_layout,
    )


def build_model(
    cfg,
    *,
    weights: str | None = None,
    device: str | None = None,
    strict: bool = True,
    official_cls_layout: str = "anchor_major",
) -> torch.nn.Module:
    """Instantiate ``cfg.model`` on ``device`` (default CUDA when available), load ``weights``
    (if given) with :class:`~efl_d2.checkpoint.EFLCheckpointer`, and return it in eval mode.

    Args:
        strict: every model parameter must come from the checkpoint (see ``EFLCheckpointer``).
        official_cls_layout: see :func:`get`.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = instantiate(cfg.model).to(device)
    if weights:
        EFLCheckpointer(model, strict=strict, official_cls_layout=official_cls_layout).load(weights)
    return model.eval()
