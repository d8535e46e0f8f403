"""OpenImages Challenge 2019 detection files: readers, the class hierarchy and its expansion, and
the Detectron2 datasets built on them.

The release files (under ``$DETECTRON2_DATASETS/openimages/``, names as released)::

    challenge-2019-classes-description-500.csv          LabelName,DisplayName (no header)
    challenge-2019-label500-hierarchy.json              {"LabelName": root, "Subcategory": [...]}
    challenge-2019-train-detection-bbox.csv             13 columns, ImageID,...,IsGroupOf,...
    challenge-2019-train-detection-human-imagelabels.csv ImageID,Source,LabelName,Confidence
    challenge-2019-validation-detection-bbox.csv        ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf
    challenge-2019-validation-detection-human-imagelabels.csv ImageID,LabelName,Confidence
    train/<ImageID>.jpg, validation/<ImageID>.jpg

Columns are found by header name, so both box layouts read the same. Boxes are normalised to
[0, 1] and kept as float64 ``[YMin, XMin, YMax, XMax]`` (the official evaluator's layout);
image-level labels are verified positives (Confidence 1) or verified negatives (0).

The hierarchy expansion is the challenge's (its ``oid_hierarchical_labels_expansion``): a box of
a class is also a box of every ancestor (the root excluded; the group-of flag kept); a positive
image-level label is also one of every ancestor, a negative one of every descendant. The released
files hold leaf-most labels only: the evaluation always expands the ground truth, training does
by default (``expand_hierarchy``).

The readers and the expansion are numpy and the standard library.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from detectron2.data.catalog import Metadata

from .build import RobustDatasetMapper

__all__ = [
    "OPENIMAGES_FILES",
    "OPENIMAGES_ROOT_MID",
    "BoxTable",
    "ClassHierarchy",
    "LabelTable",
    "OpenImagesDatasetMapper",
    "OpenImagesImages",
    "expand_boxes",
    "expand_labels",
    "expansion_rows",
    "openimages_dataset_dicts",
    "openimages_images",
    "openimages_paths",
    "read_boxes",
    "read_class_descriptions",
    "read_hierarchy",
    "read_image_labels",
    "read_split",
    "register_openimages",
    "training_instance_counts",
]

logger = logging.getLogger(__name__)

OPENIMAGES_ROOT_MID = "/m/0bl9f"  # the hierarchy's virtual root ("Entity"), never a class

# split -> (boxes csv, image-level labels csv, image folder)
OPENIMAGES_FILES = {
    "train": (
        "challenge-2019-train-detection-bbox.csv",
        "challenge-2019-train-detection-human-imagelabels.csv",
        "train",
    ),
    "val": (
        "challenge-2019-validation-detection-bbox.csv",
        "challenge-2019-validation-detection-human-imagelabels.csv",
        "validation",
    ),
}
CLASSES_FILE = "challenge-2019-classes-description-500.csv"
HIERARCHY_FILE = "challenge-2019-label500-hierarchy.json"


class OpenImagesFileError(FileNotFoundError):
    """A release file is missing or unreadable; the message names every missing file."""


def openimages_paths(root: str, split: str) -> dict[str, str]:
    """The files of ``split`` ("train" / "val") under the dataset folder ``root``."""
    boxes, labels, images = OPENIMAGES_FILES[split]
    return {
        "classes": os.path.join(root, CLASSES_FILE),
        "hierarchy": os.path.join(root, HIERARCHY_FILE),
        "boxes": os.path.join(root, boxes),
        "labels": os.path.join(root, labels),
        "images": os.path.join(root, images),
    }


def check_openimages_files(paths: dict[str, str]) -> None:
    """Raise :class:`OpenImagesFileError` naming every missing file of ``paths``."""
    missing = [p for k, p in paths.items() if not os.path.exists(p)]
    if missing:
        raise OpenImagesFileError(
            "OpenImages files missing:\n  " + "\n  ".join(missing) + "\nLay out the Challenge "
            "2019 release under $DETECTRON2_DATASETS/openimages/ as docs/openimages.md "
            "describes, or build mini-OpenImages with "
            "`python -m efl_d2.data.mini_openimages`."
        )


# --------------------------------------------------------------------------- classes


def read_class_descriptions(path: str) -> tuple[list[str], list[str]]:
    """(MIDs, display names) in file order: the class index of every MID (no header)."""
    mids, names = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if row:
                mids.append(row[0])
                names.append(row[1] if len(row) > 1 else row[0])
    if len(set(mids)) != len(mids):
        raise ValueError(f"{path}: a LabelName appears twice")
    return mids, names


@dataclass(frozen=True)
class ClassHierarchy:
    """Ancestors and descendants of every class (transitive, the root excluded), by MID."""

    ancestors: dict[str, frozenset]
    descendants: dict[str, frozenset]

    @classmethod
    def from_tree(cls, tree: dict) -> ClassHierarchy:
        ancestors: dict[str, set] = {}
        descendants: dict[str, set] = {}

        def visit(node: dict, path: tuple[str, ...]) -> None:
            mid = node["LabelName"]
            ancestors.setdefault(mid, set()).update(path)
            for a in path:
                descendants.setdefault(a, set()).add(mid)
            descendants.setdefault(mid, set())
            below = path + (mid,) if mid != OPENIMAGES_ROOT_MID else path
            for child in node.get("Subcategory", []):
                visit(child, below)

        visit(tree, ())
        ancestors.pop(OPENIMAGES_ROOT_MID, None)
        descendants.pop(OPENIMAGES_ROOT_MID, None)
        return cls(
            {k: frozenset(v) for k, v in ancestors.items()},
            {k: frozenset(v) for k, v in descendants.items()},
        )

    def index_lists(self, mids: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """(ancestors, descendants) of every class index of ``mids``, as sorted index lists."""
        index = {m: i for i, m in enumerate(mids)}

        def to_indices(table):
            return [sorted(index[m] for m in table.get(mid, ()) if m in index) for mid in mids]

        return to_indices(self.ancestors), to_indices(self.descendants)


def read_hierarchy(path: str) -> ClassHierarchy:
    with open(path, encoding="utf-8") as f:
        return ClassHierarchy.from_tree(json.load(f))


# --------------------------------------------------------------------------- boxes and labels


@dataclass
class BoxTable:
    """Boxes as columns: ``image`` (B,) int32 index into ``image_ids``, ``label`` (B,) int32 class
    index, ``boxes`` (B, 4) float64 normalised [YMin, XMin, YMax, XMax], ``group_of`` (B,) bool."""

    image_ids: list[str]
    image: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    group_of: np.ndarray


@dataclass
class LabelTable:
    """Image-level labels: ``image`` (L,) int32 into ``image_ids``, ``label`` (L,) int32,
    ``positive`` (L,) bool (False: verified negative)."""

    image_ids: list[str]
    image: np.ndarray
    label: np.ndarray
    positive: np.ndarray


def _columns(header: list[str], path: str, names: Sequence[str]) -> list[int]:
    missing = [n for n in names if n not in header]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; header: {header}")
    return [header.index(n) for n in names]


def _mid_index(mids: Sequence[str], path: str):
    index = {m: i for i, m in enumerate(mids)}

    def lookup(mid: str) -> int:
        try:
            return index[mid]
        except KeyError:
            raise ValueError(
                f"{path}: LabelName {mid!r} is not in the class descriptions"
            ) from None

    return lookup


def read_boxes(path: str, mids: Sequence[str], image_ids: dict[str, int] | None = None) -> BoxTable:
    """Read a box CSV (either release layout) into columns, in file order.

    Args:
        mids: the class MIDs (class index = position).
        image_ids: an ImageID -> index map to extend (shared with :func:`read_image_labels`);
            a new one if None.
    """
    ids = {} if image_ids is None else image_ids
    lookup = _mid_index(mids, path)
    # typed arrays, not lists: 8 bytes per coordinate instead of a float object each
    image, label, group_of, coords = array("i"), array("i"), array("b"), array("d")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        ci, cl, x0, x1, y0, y1, cg = _columns(
            header, path, ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax", "IsGroupOf")
        )
        setdefault = ids.setdefault
        for row in reader:
            image.append(setdefault(row[ci], len(ids)))
            label.append(lookup(row[cl]))
            coords.extend((float(row[y0]), float(row[x0]), float(row[y1]), float(row[x1])))
            group_of.append(row[cg] == "1")
    return BoxTable(
        image_ids=list(ids),
        image=np.frombuffer(image, dtype=np.int32).copy(),
        label=np.frombuffer(label, dtype=np.int32).copy(),
        boxes=np.frombuffer(coords, dtype=np.float64).reshape(-1, 4).copy(),
        group_of=np.frombuffer(group_of, dtype=np.int8).astype(bool),
    )


def read_image_labels(
    path: str, mids: Sequence[str], image_ids: dict[str, int] | None = None
) -> LabelTable:
    """Read an image-level label CSV (ImageID, [Source,] LabelName, Confidence), in file order.
    Labels of classes outside ``mids`` (the human-verified files cover more than the 500
    detection classes) are skipped."""
    ids = {} if image_ids is None else image_ids
    index = {m: i for i, m in enumerate(mids)}
    image, label, positive = array("i"), array("i"), array("b")  # typed, as in read_boxes
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        ci, cl, cc = _columns(header, path, ("ImageID", "LabelName", "Confidence"))
        for row in reader:
            k = index.get(row[cl])
            if k is None:
                continue
            image.append(ids.setdefault(row[ci], len(ids)))
            label.append(k)
            positive.append(float(row[cc]) == 1.0)
    return LabelTable(
        image_ids=list(ids),
        image=np.frombuffer(image, dtype=np.int32).copy(),
        label=np.frombuffer(label, dtype=np.int32).copy(),
        positive=np.frombuffer(positive, dtype=np.int8).astype(bool),
    )


def expansion_rows(label: np.ndarray, relatives: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(source row, class) of the expanded table: each row, then one row per relative of its
    class, in that order (vectorised: a CSR table of ``[class, *relatives]`` per class)."""
    lists = [[c, *r] for c, r in enumerate(relatives)]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    flat = np.asarray([v for x in lists for v in x], dtype=np.int32)
    counts = (offsets[1:] - offsets[:-1])[label]
    rows = np.repeat(np.arange(len(label)), counts)
    starts = np.cumsum(counts) - counts
    local = np.arange(len(rows)) - np.repeat(starts, counts)
    return rows, flat[offsets[label[rows]] + local]


def expand_boxes(table: BoxTable, ancestors: list[list[int]]) -> BoxTable:
    """Every box, then a copy for each ancestor of its class (group-of flag kept)."""
    rows, label = expansion_rows(table.label, ancestors)
    return BoxTable(
        table.image_ids, table.image[rows], label, table.boxes[rows], table.group_of[rows]
    )


def expand_labels(
    table: LabelTable, ancestors: list[list[int]], descendants: list[list[int]]
) -> LabelTable:
    """Positive labels copied to every ancestor, negative ones to every descendant (positives
    first, then negatives; the order of labels does not matter to their users)."""
    parts = []
    for positive, relatives in ((True, ancestors), (False, descendants)):
        keep = np.flatnonzero(table.positive == positive)
        rows, label = expansion_rows(table.label[keep], relatives)
        parts.append((table.image[keep][rows], label, np.full(len(rows), positive)))
    image, label, positive = (np.concatenate(x) for x in zip(*parts))
    return LabelTable(table.image_ids, image.astype(np.int32), label, positive)


def read_split(
    boxes_csv: str, labels_csv: str, mids: Sequence[str], hierarchy: ClassHierarchy | None = None
) -> tuple[list[str], BoxTable, LabelTable]:
    """(ImageIDs, boxes, image-level labels) of one split over one image index (every image with a
    box or a label), hierarchy-expanded if ``hierarchy`` is given."""
    ids: dict[str, int] = {}
    boxes = read_boxes(boxes_csv, mids, ids)
    labels = read_image_labels(labels_csv, mids, ids)
    if hierarchy is not None:
        ancestors, descendants = hierarchy.index_lists(mids)
        boxes = expand_boxes(boxes, ancestors)
        labels = expand_labels(labels, ancestors, descendants)
    return list(ids), boxes, labels


def training_instance_counts(
    boxes_csv: str, mids: Sequence[str], hierarchy: ClassHierarchy | None = None
) -> list[int]:
    """Boxes per class index of a box CSV (hierarchy-expanded if ``hierarchy`` is given): the
    order of the classes behind AP1-AP5."""
    boxes = read_boxes(boxes_csv, mids)
    if hierarchy is not None:
        boxes = expand_boxes(boxes, hierarchy.index_lists(mids)[0])
    return np.bincount(boxes.label, minlength=len(mids)).tolist()


# --------------------------------------------------------------------------- Detectron2 datasets

# name -> (folder under $DETECTRON2_DATASETS, split)
OPENIMAGES_DATASETS = {
    "oid_challenge_2019_train": ("openimages", "train"),
    "oid_challenge_2019_val": ("openimages", "val"),
    "mini_openimages_train": ("mini_openimages", "train"),
    "mini_openimages_val": ("mini_openimages", "val"),
}


def openimages_dataset_dicts(
    root: str, split: str, *, expand_hierarchy: bool = True, group_of: str = "box"
) -> OpenImagesImages:
    """Detectron2 dataset dicts of one split (every image with a box or an image-level label), as
    an :class:`OpenImagesImages` sequence that builds each dict when it is read.

    Args:
        root: the folder holding the release files.
        expand_hierarchy: train on the challenge's expanded labels (a box of a class is also
            one of its ancestors); False keeps the leaf-most labels as released.
        group_of: "box": a group-of box is a training box like any other; "ignore": it becomes
            ``iscrowd=1`` (Detectron2's training leaves it out).
    """
    if group_of not in ("box", "ignore"):
        raise ValueError(f'group_of must be "box" or "ignore", got {group_of!r}')
    paths = openimages_paths(root, split)
    check_openimages_files(paths)
    mids, _ = read_class_descriptions(paths["classes"])
    hierarchy = read_hierarchy(paths["hierarchy"]) if expand_hierarchy else None
    image_ids, boxes, labels = read_split(paths["boxes"], paths["labels"], mids, hierarchy)
    images = OpenImagesImages(image_ids, paths["images"], boxes, labels, group_of=group_of)
    logger.info(
        f"OpenImages {split} ({root}): {len(images)} images, {len(boxes.label)} boxes "
        f"({int(boxes.group_of.sum())} group-of), {len(labels.label)} image-level labels"
        + (" (hierarchy-expanded)" if expand_hierarchy else "")
    )
    return images


class OpenImagesImages(Sequence):
    """The Detectron2 dataset dicts of an OpenImages split, built from the columnar tables when an
    item is read: 76 bytes per box instead of 437 for materialised dicts (measured on 12.2M train
    boxes: tools/benchmark_openimages_loading.py). Item ``k`` is the dict of the view's ``k``-th
    image (:meth:`with_annotations` views share the tables)::

        {"file_name", "image_id", "annotations": [{"bbox" (XYXY_REL), "bbox_mode",
         "category_id", "iscrowd", "is_group_of"}], "pos_category_ids", "neg_category_ids"}

    Boxes are ``BoxMode.XYXY_REL`` (the files give no image sizes); :class:`OpenImagesDatasetMapper`
    makes them absolute once the image is read.
    """

    def __init__(self, image_ids, image_dir, boxes: BoxTable, labels: LabelTable, *, group_of):
        self.image_ids = image_ids
        self.image_dir = image_dir
        self.crowd = group_of == "ignore"
        order = np.argsort(boxes.image, kind="stable")
        self._box_label = boxes.label[order]
        self._boxes = boxes.boxes[order][:, [1, 0, 3, 2]]  # [XMin, YMin, XMax, YMax]
        self._group_of = boxes.group_of[order]
        n = len(image_ids)
        self._box_start = np.searchsorted(boxes.image[order], np.arange(n + 1))
        order = np.lexsort((labels.label, labels.image))
        self._label = labels.label[order]
        self._positive = labels.positive[order]
        self._label_start = np.searchsorted(labels.image[order], np.arange(n + 1))
        self.index = np.arange(n)  # the images of this view

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k):
        from detectron2.structures import BoxMode

        i = int(self.index[k])
        b0, b1 = self._box_start[i], self._box_start[i + 1]
        annotations = [
            {
                "bbox": box,
                "bbox_mode": BoxMode.XYXY_REL,
                "category_id": cls,
                "iscrowd": int(self.crowd and grp),
                "is_group_of": grp,
            }
            for box, cls, grp in zip(
                self._boxes[b0:b1].tolist(),
                self._box_label[b0:b1].tolist(),
                self._group_of[b0:b1].tolist(),
            )
        ]
        l0, l1 = self._label_start[i], self._label_start[i + 1]
        label, positive = self._label[l0:l1], self._positive[l0:l1]
        image_id = self.image_ids[i]
        return {
            "file_name": os.path.join(self.image_dir, f"{image_id}.jpg"),
            "image_id": image_id,
            "annotations": annotations,
            "pos_category_ids": sorted(set(label[positive].tolist())),
            "neg_category_ids": sorted(set(label[~positive].tolist())),
        }

    def with_annotations(self) -> OpenImagesImages:
        """The images with a box used for training (Detectron2's ``filter_empty``: not only
        crowd boxes), sharing the tables."""
        view = copy.copy(self)
        counts = np.diff(self._box_start)
        if self.crowd:
            plain = np.cumsum(np.concatenate([[0], ~self._group_of]))
            counts = plain[self._box_start[1:]] - plain[self._box_start[:-1]]
        view.index = self.index[counts[self.index] > 0]
        return view


def openimages_images(
    names: str,
    filter_empty: bool = False,
    *,
    expand_hierarchy: bool = True,
    group_of: str = "box",
) -> OpenImagesImages:
    """The images of the registered OpenImages dataset ``names`` (one name; the key is called so
    for the configs' ``dataloader.*.dataset.names``), the config's way to a dataset with the
    training-label knobs of :func:`openimages_dataset_dicts` (``expand_hierarchy``,
    ``group_of``); with ``filter_empty`` only the images with a box used for training.
    Detectron2's ``get_detection_dataset_dicts`` would materialise a dict per image instead."""
    from detectron2.data import MetadataCatalog

    from .datasets import check_dataset_names

    (name,) = check_dataset_names(names)
    meta = MetadataCatalog.get(name)
    if getattr(meta, "evaluator_type", None) != "openimages":
        raise ValueError(f"{name!r} is not an OpenImages dataset (efl_d2.data.openimages)")
    images = openimages_dataset_dicts(
        meta.dataset_root, meta.split, expand_hierarchy=expand_hierarchy, group_of=group_of
    )
    return images.with_annotations() if filter_empty else images


def register_openimages(root: str | None = None) -> None:
    """Register the OpenImages datasets (:data:`OPENIMAGES_DATASETS`) under ``root`` (default
    ``$DETECTRON2_DATASETS``). Nothing is read until a dataset is used."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .datasets import datasets_root

    base = root or datasets_root()
    for name, (folder, split) in OPENIMAGES_DATASETS.items():
        folder_path = os.path.join(base, folder)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda r=folder_path, s=split: openimages_dataset_dicts(r, s))
        MetadataCatalog[name] = meta = _OpenImagesMetadata(name=name)  # lazy class names
        meta.set(
            dataset_root=folder_path,
            split=split,
            evaluator_type="openimages",
            train_dataset=name.rsplit("_", 1)[0] + "_train",
        )


class _OpenImagesMetadata(Metadata):
    """Metadata whose class MIDs and names are read from the class descriptions file the first
    time they are asked for (registering reads nothing)."""

    def __getattr__(self, key):
        if key in ("thing_classes", "class_mids"):
            root = self.__dict__.get("dataset_root", "")
            path = os.path.join(root, CLASSES_FILE)
            if os.path.isfile(path):
                mids, names = read_class_descriptions(path)
                # straight into __dict__: Metadata.__setattr__ would come back here
                self.__dict__.update(thing_classes=names, class_mids=mids)
                return self.__dict__[key]
        return super().__getattr__(key)


def category_instance_counts_openimages(name: str) -> list[int]:
    """Training boxes per class of the OpenImages dataset ``name``'s training split, as the
    detector is trained on them (hierarchy-expanded): the order behind AP1-AP5."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    train = MetadataCatalog.get(meta.train_dataset)
    paths = openimages_paths(train.dataset_root, train.split)
    check_openimages_files(paths)
    mids, _ = read_class_descriptions(paths["classes"])
    return training_instance_counts(paths["boxes"], mids, read_hierarchy(paths["hierarchy"]))


class OpenImagesDatasetMapper(RobustDatasetMapper):
    """:class:`RobustDatasetMapper` for OpenImages dicts: their ``XYXY_REL`` boxes become absolute
    pixels of the image just read, before the augmentations."""

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        from detectron2.structures import BoxMode

        w, h = dataset_dict["width"], dataset_dict["height"]
        for anno in dataset_dict.get("annotations", []):
            if anno.get("bbox_mode") == BoxMode.XYXY_REL:
                x0, y0, x1, y1 = anno["bbox"]
                anno["bbox"] = [x0 * w, y0 * h, x1 * w, y1 * h]
                anno["bbox_mode"] = BoxMode.XYXY_ABS
        return super()._transform_annotations(dataset_dict, transforms, image_shape)
