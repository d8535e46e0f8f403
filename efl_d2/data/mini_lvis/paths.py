"""Where a mini-LVIS build lives, whether it is complete, and what its sidecar says."""

from __future__ import annotations

import dataclasses
import json
import os

__all__ = [
    "FORMAT_VERSION",
    "JSON_NAMES",
    "META_NAME",
    "SPLIT_FOLDERS",
    "MiniLVISPaths",
    "is_complete",
    "load_meta",
    "mini_lvis_paths",
    "sibling_pairs",
    "unannotated_instances",
]

#: Bumped whenever the generator's output changes for the same parameters; a dataset built by
#: another version is rebuilt by :func:`~efl_d2.data.mini_lvis.ensure_mini_lvis`.
FORMAT_VERSION = 1

SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}
JSON_NAMES = {"train": "mini_lvis_v1_train.json", "val": "mini_lvis_v1_val.json"}
META_NAME = "mini_lvis_v1_meta.json"


@dataclasses.dataclass(frozen=True)
class MiniLVISPaths:
    """Where a mini-LVIS build lives.

    ``image_root`` ends with ``os.sep``: detectron2's LVIS loader concatenates it with
    ``<split>2017`` taken from each image's ``coco_url``. Pass it unchanged to
    ``register_lvis_instances`` / ``load_lvis_json``.
    """

    root: str
    json_train: str
    json_val: str
    image_root: str
    meta: str

    def json(self, split: str) -> str:
        """The annotation json of ``split`` ("train" or "val")."""
        return {"train": self.json_train, "val": self.json_val}[split]

    def image_dir(self, split: str) -> str:
        """The folder that holds the images of ``split``."""
        return self.image_root + SPLIT_FOLDERS[split]


def mini_lvis_paths(root: str | os.PathLike) -> MiniLVISPaths:
    """The paths of a mini-LVIS dataset under ``root`` (whether or not it exists)."""
    root = os.path.abspath(os.fspath(root))
    lvis_dir = os.path.join(root, "lvis")
    return MiniLVISPaths(
        root=root,
        json_train=os.path.join(lvis_dir, JSON_NAMES["train"]),
        json_val=os.path.join(lvis_dir, JSON_NAMES["val"]),
        image_root=os.path.join(root, "mini_lvis") + os.sep,
        meta=os.path.join(lvis_dir, META_NAME),
    )


def load_meta(root_or_paths: str | os.PathLike | MiniLVISPaths) -> dict:
    """The sidecar of a built dataset: parameters, category specs, unannotated instances.

    Keys: ``format_version``, ``params``, ``categories`` (list of dicts with ``id, name, shape,
    colour, rgb, secondary_rgb, texture, rank, target_train_images, sibling_of``) and
    ``unannotated`` (``{"train": [...], "val": [...]}``; records with ``image_id, category_id,
    bbox, area, segmentation`` of the instances drawn but deliberately left unannotated; their
    categories are in the image's ``not_exhaustive_category_ids``).
    """
    paths = root_or_paths if isinstance(root_or_paths, MiniLVISPaths) else None
    path = paths.meta if paths else os.fspath(root_or_paths)
    if os.path.isdir(path):
        path = mini_lvis_paths(path).meta
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sibling_pairs(meta: dict) -> list[tuple[int, int]]:
    """(sibling category id, parent category id) of every fine-grained look-alike pair."""
    by_name = {c["name"]: c["id"] for c in meta["categories"]}
    return sorted(
        (c["id"], by_name[c["sibling_of"]]) for c in meta["categories"] if c["sibling_of"]
    )


def unannotated_instances(meta: dict, split: str) -> list[dict]:
    """Instances of ``split`` drawn in the images but deliberately not annotated."""
    return list(meta["unannotated"][split])


def is_complete(root: str | os.PathLike, params: dict | None = None) -> bool:
    """Whether a full mini-LVIS build (by this generator version, with ``params``) is at root."""
    paths = mini_lvis_paths(root)
    if not all(os.path.isfile(p) for p in (paths.json_train, paths.json_val, paths.meta)):
        return False
    try:
        meta = load_meta(paths)
    except (OSError, ValueError):
        return False
    if meta.get("format_version") != FORMAT_VERSION:
        return False
    if params is not None and meta.get("params") != params:
        return False
    p = meta.get("params", {})
    for split in ("train", "val"):
        d = paths.image_dir(split)
        n = p.get(f"num_{split}_images")
        if not os.path.isdir(d) or (n is not None and len(os.listdir(d)) != n):
            return False
    return True
