"""Dataset registration and checked dataset loading for LVIS-format data.

Replaces Detectron2's metadata for mini-LVIS because Detectron2 gives any "v1" LVIS name the
builtin 1203 LVIS classes: here the class names and frequency groups come from the dataset's json.

Real LVIS v1 stays under detectron2's builtin names (``lvis_v1_train``, ``lvis_v1_val``, data under
``$DETECTRON2_DATASETS``). mini-LVIS, the synthetic long-tailed dataset of
:mod:`efl_d2.data.mini_lvis`, is registered as ``mini_lvis_v1_train`` / ``mini_lvis_v1_val``
through detectron2's own ``register_lvis_instances`` and ``load_lvis_json``.

Registration never reads an annotation file (``import efl_d2`` works whatever state the data is
in); mini-LVIS's class names come from its json the first time they are asked for. A broken file is
reported, with its path (and line and column for JSON), when it is used.
"""

import functools
import json
import logging
import os
from collections.abc import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.catalog import Metadata
from detectron2.data.datasets.lvis import load_lvis_json, register_lvis_instances

from ..categories import category_frequencies

__all__ = [
    "LVIS_V1_TRAIN_ANNOTATED_IMAGES",
    "MINI_LVIS_SPLITS",
    "DatasetFileError",
    "category_image_frequencies",
    "category_instance_counts",
    "check_dataset_names",
    "class_frequencies",
    "datasets_root",
    "ensure_mini_lvis",
    "get_lvis_dataset_dicts",
    "lvis_json_metadata",
    "read_json",
    "register_mini_lvis",
    "wrap_builtin_lvis_loaders",
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


class DatasetFileError(ValueError):
    """An annotation file is missing, not valid JSON, or inconsistent; the message names it."""


def read_json(json_file: str):
    """``json.load`` with an error that names the file, line and column."""
    try:
        with open(json_file, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise _json_error(json_file, e) from e


def _json_error(json_file: str, e: json.JSONDecodeError) -> DatasetFileError:
    return DatasetFileError(
        f"{json_file}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}). "
        + _repair_hint(json_file)
    )


def _repair_hint(json_file: str) -> str:
    if os.path.basename(json_file).startswith("mini_lvis"):
        root = os.path.dirname(os.path.dirname(os.path.abspath(json_file)))
        return f"Rebuild it with `python -m efl_d2.data.mini_lvis --root {root} --force`."
    return "Restore the file (e.g. download it again)."


class _JsonMetadata(Metadata):
    """Metadata whose class names / image counts / frequency groups are read from an LVIS-format
    json the first time one of them is asked for (not at registration)."""

    _FROM_JSON = ("thing_classes", "class_image_count", "class_frequency")

    def __getattr__(self, key):
        if key in self._FROM_JSON and os.path.isfile(self.__dict__.get("json_file", "")):
            # straight into __dict__: Metadata.__setattr__ reads the old value, i.e. comes back here
            self.__dict__.update(lvis_json_metadata(self.json_file))
            return self.__dict__[key]
        return super().__getattr__(key)


def lvis_json_metadata(json_file: str) -> dict:
    """Metadata of an LVIS-format json: class names, image counts and frequency groups by class.

    Returns:
        dict with ``thing_classes`` (list[str], by contiguous id), ``class_image_count`` (list of
        ``{"id", "image_count"}`` like detectron2's LVIS v1 metadata) and ``class_frequency``
        (list of "r"/"c"/"f" by contiguous id).
    """
    data = read_json(json_file)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise DatasetFileError(f"{json_file}: no 'categories' list. " + _repair_hint(json_file))
    cats = sorted(data["categories"], key=lambda c: c["id"])
    try:
        frequency = category_frequencies(cats)
    except ValueError as e:
        raise DatasetFileError(f"{json_file}: {e}. " + _repair_hint(json_file)) from e
    return {
        "thing_classes": [c["synonyms"][0] if c.get("synonyms") else c["name"] for c in cats],
        "class_image_count": [{"id": c["id"], "image_count": c["image_count"]} for c in cats],
        "class_frequency": frequency,
    }


def _load_mini_lvis(name: str, json_file: str, image_root: str) -> list[dict]:
    _check_files(name, json_file, image_root)
    # No dataset_name: detectron2 would install the builtin 1203-class LVIS metadata for any name
    # containing "v1". The metadata of mini-LVIS comes from its own json instead.
    try:
        dicts = load_lvis_json(json_file, image_root)
    except json.JSONDecodeError as e:
        raise _json_error(json_file, e) from e
    _check_category_ids(dicts, MetadataCatalog.get(name).thing_classes, json_file)
    return dicts


def _check_category_ids(dicts: list[dict], classes: list[str], json_file: str) -> None:
    """Every annotation's contiguous category id in [0, C); else name the file and image."""
    for d in dicts:
        for a in d["annotations"]:
            if not 0 <= a["category_id"] < len(classes):
                raise DatasetFileError(
                    f"{json_file}: image {d['image_id']} ({d['file_name']}) has an annotation "
                    f"with category_id {a['category_id'] + 1}, but the file's categories have "
                    f"ids 1..{len(classes)}. " + _repair_hint(json_file)
                )


def _checked_builtin_loader(name: str, load):
    """Wrap a builtin LVIS loader so that broken annotation files are reported by path."""

    def checked():
        meta = MetadataCatalog.get(name)
        _check_files(name, meta.json_file, meta.image_root)
        try:
            return load()
        except json.JSONDecodeError as e:
            raise _json_error(meta.json_file, e) from e
        except KeyError as e:  # detectron2 maps LVIS category ids through a dict
            raise DatasetFileError(
                f"{meta.json_file}: an annotation has category id {e.args[0]!r}, which is not "
                "one of LVIS v1's 1203 categories. " + _repair_hint(meta.json_file)
            ) from e

    checked.efl_d2_checked = True
    return checked


def wrap_builtin_lvis_loaders() -> None:
    """Give detectron2's builtin LVIS datasets the named errors of :func:`_checked_builtin_loader`."""
    for name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if not name.startswith("lvis_") or getattr(meta, "evaluator_type", None) != "lvis":
            continue
        load = DatasetCatalog[name]
        if getattr(load, "efl_d2_checked", False):
            continue
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, _checked_builtin_loader(name, load))


def register_mini_lvis(root: str | None = None) -> None:
    """(Re-)register the mini-LVIS splits under ``root`` (default: :func:`datasets_root`).

    Re-registering replaces earlier registrations, so tests and tools can point the names at
    another root. Nothing is read here: metadata that needs the json (class names) is read from it
    when first asked for.
    """
    root = root if root is not None else datasets_root()
    for name, (json_rel, image_rel) in MINI_LVIS_SPLITS.items():
        json_file = os.path.join(root, json_rel)
        image_root = os.path.join(root, image_rel)  # ends with a separator, as load_lvis_json needs
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        MetadataCatalog[name] = _JsonMetadata(name=name)
        register_lvis_instances(name, {}, json_file, image_root)
        DatasetCatalog.remove(name)
        DatasetCatalog.register(
            name, functools.partial(_load_mini_lvis, name, json_file, image_root)
        )


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
        else "See docs/installation.md, 'Using real LVIS v1', for the expected layout."
    )
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"Dataset {name!r}: annotation file {json_file!r} does not exist. {hint}"
        )
    if image_root and not os.path.isdir(image_root):
        raise FileNotFoundError(
            f"Dataset {name!r}: image folder {image_root!r} does not exist. {hint}"
        )


def split_into_characters(names: Sequence) -> bool:
    """Whether a sequence of names is one name split into characters (``("my_dataset")`` where a
    tuple was meant, iterated by detectron2 character by character)."""
    return len(names) > 1 and all(isinstance(n, str) and len(n) == 1 for n in names)


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
    if split_into_characters(names):
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


# LVIS v1 train: the images with at least one annotation (of 100,170), the denominator of the
# per-category frequencies in EQL's authors' LVIS v1 table (image_count / image_count_frequency).
LVIS_V1_TRAIN_ANNOTATED_IMAGES = 99_388


def category_image_frequencies(name: str) -> list[float]:
    """f_j = (training images containing class j) / (training images with any annotation), by
    contiguous class id: EQL's frequency, read from the dataset's ``class_image_count``.

    The denominator is :data:`LVIS_V1_TRAIN_ANNOTATED_IMAGES` for ``lvis_v1_train`` (so that the
    1 GB json is not read twice) and counted from the dataset's images otherwise.
    """
    (name,) = check_dataset_names(name)
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "class_image_count"):
        raise ValueError(f"Dataset {name!r} has no class_image_count metadata (an LVIS dataset?)")
    counts = [c["image_count"] for c in meta.class_image_count]
    if name == "lvis_v1_train":
        num_images = LVIS_V1_TRAIN_ANNOTATED_IMAGES
    else:
        num_images = len(get_lvis_dataset_dicts(name, filter_empty=True))
    return [c / num_images for c in counts]


def category_instance_counts(name: str) -> list[int]:
    """Training instances (annotations) of every class by contiguous id, counted from the
    dataset's images (BAGS groups classes by it). On LVIS v1 this reads the training json once."""
    (name,) = check_dataset_names(name)
    num_classes = len(MetadataCatalog.get(name).thing_classes)
    counts = [0] * num_classes
    for d in get_lvis_dataset_dicts(name, filter_empty=True):
        for a in d.get("annotations", []):
            counts[a["category_id"]] += 1
    return counts


def class_frequencies(
    names: str | Sequence[str], num_classes: int | None = None
) -> list[str] | None:
    """LVIS frequency group ("r"/"c"/"f") of every class of the (first) dataset, if known.

    mini-LVIS carries it in its metadata (from its json); LVIS v1 names (Detectron2 gives any name
    containing "v1" the LVIS v1 metadata) take it from Detectron2's LVIS v1 category table. None
    for other datasets, and when the list would not have one letter per class (``num_classes``,
    else the metadata's class count).
    """
    name = [names] if isinstance(names, str) else list(names)
    meta = MetadataCatalog.get(name[0])
    if hasattr(meta, "class_frequency"):
        frequency = list(meta.class_frequency)
    elif "v1" in name[0]:
        from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

        frequency = category_frequencies(LVIS_CATEGORIES)
    else:
        return None
    if num_classes is None:
        num_classes = len(getattr(meta, "thing_classes", None) or frequency)
    return frequency if len(frequency) == num_classes else None
