"""Dataset registration and checked dataset loading for LVIS-format data.

Real LVIS v1 stays under detectron2's builtin names (``lvis_v1_train``, ``lvis_v1_val``, data under
``$DETECTRON2_DATASETS``). mini-LVIS, the synthetic long-tailed dataset of
:mod:`efl_d2.data.mini_lvis`, is registered as ``mini_lvis_v1_train`` / ``mini_lvis_v1_val``
through detectron2's own ``register_lvis_instances`` and ``load_lvis_json``.
"""

import functools
import json
import logging
import os
from collections.abc import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.datasets.lvis import load_lvis_json, register_lvis_instances

__all__ = [
    "MINI_LVIS_SPLITS",
    "check_dataset_names",
    "class_frequencies",
    "datasets_root",
    "ensure_mini_lvis",
    "get_lvis_dataset_dicts",
    "lvis_json_metadata",
    "register_mini_lvis",
]

logger = logging.getLogger(__name__)

# name -> (json file, image root), relative to the datasets root; the layout mirrors real LVIS
# (json under lvis/, images in "<split>2017/" folders named by each image's coco_url).
MINI_LVIS_SPLITS = {
    "mini_lvis_v1_train": ("lvis/mini_lvis_v1_train.json", "mini_lvis/"),
    "mini_lvis_v1_val": ("lvis/mini_lvis_v1_val.json", "mini_lvis/"),
}


def datasets_root() -> str:
    """The datasets root, as detectron2's builtin registration computes it."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def lvis_json_metadata(json_file: str) -> dict:
    """Metadata of an LVIS-format json: class names, image counts and frequency groups by class.

    Returns:
        dict with ``thing_classes`` (list[str], by contiguous id), ``class_image_count`` (list of
        ``{"id", "image_count"}`` like detectron2's LVIS v1 metadata) and ``class_frequency``
        (list of "r"/"c"/"f" by contiguous id).
    """
    with open(json_file) as f:
        cats = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    return {
        "thing_classes": [c["synonyms"][0] if c.get("synonyms") else c["name"] for c in cats],
        "class_image_count": [{"id": c["id"], "image_count": c["image_count"]} for c in cats],
        "class_frequency": [c["frequency"] for c in cats],
    }


def _load_mini_lvis(name: str, json_file: str, image_root: str) -> list[dict]:
    _check_files(name, json_file, image_root)
    # No dataset_name: detectron2 would install the builtin 1203-class LVIS metadata for any name
    # containing "v1". The metadata of mini-LVIS comes from its own json instead.
    dicts = load_lvis_json(json_file, image_root)
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_classes"):
        meta.set(**lvis_json_metadata(json_file))
    return dicts


def register_mini_lvis(root: str | None = None) -> None:
    """(Re-)register the mini-LVIS splits under ``root`` (default: :func:`datasets_root`).

    Re-registering replaces earlier registrations, so tests and tools can point the names at
    another root. Metadata that needs the json (class names) is filled when the json exists.
    """
    root = root if root is not None else datasets_root()
    for name, (json_rel, image_rel) in MINI_LVIS_SPLITS.items():
        json_file = os.path.join(root, json_rel)
        image_root = os.path.join(root, image_rel)  # ends with a separator, as load_lvis_json needs
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_lvis_instances(name, {}, json_file, image_root)
        DatasetCatalog.remove(name)
        DatasetCatalog.register(
            name, functools.partial(_load_mini_lvis, name, json_file, image_root)
        )
        if os.path.isfile(json_file):
            MetadataCatalog.get(name).set(**lvis_json_metadata(json_file))


def ensure_mini_lvis(root: str | None = None, **generator_kwargs) -> str:
    """Build mini-LVIS under ``root`` unless an identical build is there, then register it there.

    Returns the root. ``generator_kwargs`` go to :func:`efl_d2.data.mini_lvis.generate_mini_lvis`.
    """
    from . import mini_lvis

    root = root if root is not None else datasets_root()
    mini_lvis.ensure_mini_lvis(
        root, progress=lambda msg: print(msg, flush=True), **generator_kwargs
    )
    register_mini_lvis(root)
    return root


def _check_files(name: str, json_file: str, image_root: str) -> None:
    hint = f"Datasets are looked up under $DETECTRON2_DATASETS (now {datasets_root()!r}). " + (
        "Generate mini-LVIS with `python -m efl_d2.data.mini_lvis --root <datasets root>`."
        if name in MINI_LVIS_SPLITS
        else "See README.md, 'Using real LVIS v1', for the expected layout."
    )
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"Dataset {name!r}: annotation file {json_file!r} does not exist. {hint}"
        )
    if image_root and not os.path.isdir(image_root):
        raise FileNotFoundError(
            f"Dataset {name!r}: image folder {image_root!r} does not exist. {hint}"
        )


def check_dataset_names(names: str | Sequence[str]) -> list[str]:
    """Validate dataset names and return them as a list, with errors that say what to do.

    Catches the classic ``("my_dataset")`` mistake (a string where a tuple was meant, which
    detectron2 would iterate character by character) and unregistered names.
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("No dataset names given.")
    if all(isinstance(n, str) and len(n) == 1 for n in names) and len(names) > 1:
        joined = "".join(names)
        raise TypeError(
            f"Dataset names {names!r} look like the string {joined!r} split into characters: "
            f"pass a tuple/list of names, e.g. ({joined!r},) with the trailing comma, or the "
            "plain string."
        )
    registered = DatasetCatalog.list()
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"Dataset names must be strings, got {n!r} of type {type(n).__name__}")
        if n not in registered:
            close = sorted(r for r in registered if "lvis" in r) if "lvis" in n else []
            raise KeyError(
                f"Dataset {n!r} is not registered. "
                + (f"Registered LVIS datasets: {close}. " if close else "")
                + "Did you `import efl_d2` (it registers mini-LVIS)?"
            )
    return names


def get_lvis_dataset_dicts(names: str | Sequence[str], filter_empty: bool = True) -> list[dict]:
    """detectron2's ``get_detection_dataset_dicts`` with checked names and clear missing-file errors.

    Args:
        names: a registered dataset name or a list/tuple of names.
        filter_empty: drop images without annotations (training); keep them for evaluation.
    """
    names = check_dataset_names(names)
    for n in names:
        meta = MetadataCatalog.get(n)
        if getattr(meta, "evaluator_type", None) == "lvis" and hasattr(meta, "json_file"):
            _check_files(n, meta.json_file, getattr(meta, "image_root", ""))
    return get_detection_dataset_dicts(names, filter_empty=filter_empty)


def class_frequencies(names: str | Sequence[str]) -> list[str] | None:
    """LVIS frequency group ("r"/"c"/"f") of every class of the (first) dataset, if known.

    mini-LVIS carries it in its metadata (from its json); for detectron2's builtin LVIS v1 names it
    comes from detectron2's LVIS v1 category table. None for other datasets.
    """
    name = [names] if isinstance(names, str) else list(names)
    meta = MetadataCatalog.get(name[0])
    if hasattr(meta, "class_frequency"):
        return list(meta.class_frequency)
    if name[0].startswith("lvis_v1"):
        from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

        return [c["frequency"] for c in sorted(LVIS_CATEGORIES, key=lambda c: c["id"])]
    return None
