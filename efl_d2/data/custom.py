"""A user's own detection data, COCO or LVIS format, for the ``configs/custom/`` configs.

The configs name the data in a ``custom`` node (``custom.train_json=... custom.train_images=...
custom.val_json=... custom.val_images=...``); :func:`register_custom_data` reads the jsons and
registers them as ``custom_train`` / ``custom_val``, with everything Detectron2 and efl_d2 take
from a dataset's metadata:

- the classes: every category of the training json, in sorted-id order (the ids may be any
  integers; ``thing_dataset_id_to_contiguous_id`` maps them), their names from the json;
- the frequency groups (``class_frequency``, ``class_image_count``): rare / common / frequent by
  the number of training images holding the class, with ``custom.frequency_thresholds`` (LVIS's
  [10, 100] by default) — the same groups for the val set;
- the format, detected from the content: LVIS format when every image carries LVIS's
  ``neg_category_ids`` and ``not_exhaustive_category_ids`` (scored with LVIS's federated rules),
  COCO format when none does (scored as pycocotools' COCOeval scores it).

:func:`custom_data_problems` is the preflight of the data: every problem of both files in one
list (ids, boxes, images on disk, what the scoring protocol needs), each naming the file, the
first offending record and the fix. Why not Detectron2's ``load_lvis_json``: it needs masks and
``coco_url`` in every record, which box-only data usually lacks; the records built here are the
same ``dataset_dicts`` it would give.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..categories import check_frequency_thresholds, frequency_group

__all__ = [
    "CUSTOM_SPLITS",
    "CustomSplit",
    "custom_data_problems",
    "custom_data_summary",
    "read_custom_split",
    "register_custom_data",
]

logger = logging.getLogger(__name__)

#: The registered name of each split and the ``custom`` keys that give its files.
CUSTOM_SPLITS = {
    "custom_train": ("custom.train_json", "custom.train_images"),
    "custom_val": ("custom.val_json", "custom.val_images"),
}
#: LVIS's image fields of the federated protocol; their presence makes a json LVIS format.
LVIS_IMAGE_FIELDS = ("neg_category_ids", "not_exhaustive_category_ids")
_SHOWN = 3  # offending records quoted per kind of problem


class CustomDataError(ValueError):
    """The custom data cannot be used as given; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(problems))


@dataclass
class CustomSplit:
    """One parsed annotation file: its records checked for structure, by sorted id."""

    json_file: str
    image_root: str
    format: str  # "coco" or "lvis"
    categories: list[dict]  # sorted by id
    images: list[dict]  # sorted by id
    annotations: list[dict]
    problems: list[str] = field(default_factory=list)

    @property
    def category_ids(self) -> list[int]:
        return [c["id"] for c in self.categories]

    def image_path(self, image: dict) -> str:
        """The file of an image record: ``file_name`` under the image folder, else LVIS's
        ``coco_url`` convention (its last two parts, split folder and name, under it)."""
        if "file_name" in image:
            return os.path.join(self.image_root, image["file_name"])
        return os.path.join(self.image_root, *image["coco_url"].split("/")[-2:])


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Findings:
    """Offending records by kind of problem; one sentence per kind, with the first few."""

    def __init__(self, json_file: str):
        self.json_file = json_file
        self.kinds: dict[str, list[str]] = defaultdict(list)
        self.fixes: dict[str, str] = {}

    def add(self, kind: str, record: str, fix: str) -> None:
        self.kinds[kind].append(record)
        self.fixes[kind] = fix

    def sentences(self) -> list[str]:
        out = []
        for kind, records in self.kinds.items():
            shown = "; ".join(records[:_SHOWN]) + ("; ..." if len(records) > _SHOWN else "")
            out.append(f"{self.json_file}: {len(records)} {kind} ({shown}). {self.fixes[kind]}")
        return out


def read_custom_split(json_file: str, image_root: str) -> CustomSplit:
    """Parse a COCO- or LVIS-format json; structural problems (that stop anything else from
    being checked) are in the result's ``problems``, with empty record lists. The result is
    shared by the callers of a process (the registration, the preflight, the loader) while the
    file is unchanged: read it, do not modify it.

    Raises:
        CustomDataError: the file is missing or not JSON.
    """
    if not os.path.isfile(json_file):
        raise CustomDataError([f"{json_file}: no such file."])
    st = os.stat(json_file)
    return _read_split(
        json_file, image_root, os.path.abspath(json_file), st.st_mtime_ns, st.st_size
    )


@functools.lru_cache(maxsize=2)
def _read_split(json_file: str, image_root: str, *file_state) -> CustomSplit:
    # keyed by the file's state: each file is parsed and checked once per process
    from .datasets import DatasetFileError, read_json

    try:
        data = read_json(json_file)
    except DatasetFileError as e:
        raise CustomDataError([str(e).replace(" Restore the file (e.g. download it again).", "")])
    split = CustomSplit(json_file, image_root, "coco", [], [], [])
    lists = ("images", "annotations", "categories")
    missing = [k for k in lists if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        split.problems.append(
            f"{json_file}: no {' / '.join(repr(k) for k in missing)} list at the top level: a "
            "COCO- or LVIS-format json has 'images', 'annotations' and 'categories' lists."
        )
        return split
    split.problems += _structure_problems(json_file, data)
    if split.problems:
        return split
    split.categories = sorted(data["categories"], key=lambda c: c["id"])
    split.images = sorted(data["images"], key=lambda i: i["id"])
    split.annotations = data["annotations"]
    with_lvis = sum(all(k in i for k in LVIS_IMAGE_FIELDS) for i in split.images)
    split.format = "lvis" if with_lvis and with_lvis == len(split.images) else "coco"
    if 0 < with_lvis < len(split.images):
        split.problems.append(
            f"{json_file}: {with_lvis} of {len(split.images)} images carry LVIS's "
            f"{' and '.join(LVIS_IMAGE_FIELDS)} and the others do not: give them to every image "
            "(LVIS format, federated scoring) or to none (COCO format, COCO scoring)."
        )
    return split


def _structure_problems(json_file: str, data: dict) -> list[str]:
    """Records without the ids, names and sizes everything else relies on, and duplicate ids."""
    f = _Findings(json_file)
    for c in data["categories"]:
        if (
            not isinstance(c, dict)
            or not _is_int(c.get("id"))
            or not isinstance(c.get("name"), str)
        ):
            f.add(
                "categories without an integer 'id' and a 'name'",
                f"{c!r:.80}",
                "Give every category an integer id and a name.",
            )
    for i in data["images"]:
        if not isinstance(i, dict) or not _is_int(i.get("id")):
            f.add("images without an integer 'id'", f"{i!r:.80}", "Give every image an integer id.")
        elif not all(_is_int(i.get(k)) and i[k] > 0 for k in ("width", "height")):
            f.add(
                "images without a positive integer 'width' and 'height'",
                f"image {i['id']}",
                "Give every image its size in pixels.",
            )
        elif not isinstance(i.get("file_name"), str) and not isinstance(i.get("coco_url"), str):
            f.add(
                "images without a 'file_name'",
                f"image {i['id']}",
                "Give every image its file name, relative to the image folder.",
            )
    for a in data["annotations"]:
        if not isinstance(a, dict) or not all(
            _is_int(a.get(k)) for k in ("id", "image_id", "category_id")
        ):
            f.add(
                "annotations without integer 'id', 'image_id' and 'category_id'",
                f"{a!r:.80}",
                "Give every annotation its own id, its image's id and its category's id.",
            )
    problems = f.sentences()
    if problems:
        return problems
    for key, what in (
        ("categories", "category"),
        ("images", "image"),
        ("annotations", "annotation"),
    ):
        counts = Counter(r["id"] for r in data[key])
        dup = sorted(k for k, n in counts.items() if n > 1)
        if dup:
            problems.append(
                f"{json_file}: {len(dup)} {what} ids are used more than once "
                f"(e.g. {', '.join(map(str, dup[:_SHOWN]))}): every {what} needs its own id."
            )
    names = Counter(c["name"] for c in data["categories"])
    dup_names = sorted(n for n, k in names.items() if k > 1)
    if dup_names:
        problems.append(
            f"{json_file}: category names used by more than one id ({dup_names[:_SHOWN]}): "
            "detections of those classes could not be told apart by name; rename them."
        )
    return problems


def _record_problems(split: CustomSplit) -> tuple[list[str], int]:
    """Problems of the annotations (ids, boxes, what the protocol needs) and the number of boxes
    that reach past their image (clipped in training, counted here)."""
    f = _Findings(split.json_file)
    images = {i["id"]: i for i in split.images}
    cats = set(split.category_ids)
    clipped = 0
    for a in split.annotations:
        where = f"annotation {a['id']} of image {a['image_id']}"
        image = images.get(a["image_id"])
        if image is None:
            f.add(
                "annotations of an image id that is not in 'images'",
                where,
                "Add the image or remove its annotations.",
            )
            continue
        if a["category_id"] not in cats:
            f.add(
                "annotations with a category id that is not in 'categories'",
                f"{where}: category_id {a['category_id']}",
                "Add the category or fix the annotation's category_id.",
            )
        box = a.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(map(_is_number, box)):
            f.add(
                "annotations without a 'bbox' of 4 numbers [x, y, width, height]",
                f"{where}: bbox {box!r}",
                "Give every annotation its box in pixels.",
            )
            continue
        if not all(math.isfinite(v) for v in box):
            f.add(
                "boxes with NaN or infinite values",
                f"{where}: bbox {box}",
                "Fix or remove these boxes.",
            )
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            f.add(
                "boxes with a negative or zero width or height",
                f"{where}: bbox {box}",
                "COCO boxes are [x, y, width, height] with width, height > 0: fix the boxes "
                "(a negative size is not turned into a box here) or remove them.",
            )
            continue
        W, H = image["width"], image["height"]
        if x >= W or y >= H or x + w <= 0 or y + h <= 0:
            f.add(
                "boxes entirely outside their image",
                f"{where}: bbox {box}, image {W}x{H}",
                "Fix the boxes (or the image's width/height) or remove them.",
            )
            continue
        clipped += x < 0 or y < 0 or x + w > W or y + h > H
        area = a.get("area")
        if not _is_number(area) or not math.isfinite(area) or area < 0:
            f.add(
                "annotations without a finite 'area' >= 0 (the scoring's area ranges need it)",
                f"{where}: area {area!r}",
                "Add 'area' (the object's area in pixels; width * height for box-only data).",
            )
        if split.format == "coco" and a.get("iscrowd") not in (0, 1):
            f.add(
                "annotations without 'iscrowd' 0 or 1 (pycocotools' COCOeval needs it)",
                where,
                'Add "iscrowd": 0 (1 for a crowd region, which is not trained on).',
            )
    if split.format == "lvis":
        for i in split.images:
            bad = [c for k in LVIS_IMAGE_FIELDS for c in i[k] if c not in cats]
            if bad:
                f.add(
                    f"images whose {' / '.join(LVIS_IMAGE_FIELDS)} name unknown categories",
                    f"image {i['id']}: {bad[:_SHOWN]}",
                    "List only ids of 'categories'.",
                )
    return f.sentences(), clipped


def _image_problems(split: CustomSplit, images_key: str) -> list[str]:
    """Images that are missing, unreadable or of another size than the json says."""
    from .image_io import image_file_problem

    if not os.path.isdir(split.image_root):
        where = f"the images of {split.json_file} are looked up under it"
        return [f"{images_key}={split.image_root!r}: no such folder ({where})."]
    f = _Findings(split.json_file)
    for image in split.images:
        path = split.image_path(image)
        problem = image_file_problem(path, (image["height"], image["width"]))
        if problem is not None:
            f.add(
                "images that cannot be used",
                f"image {image['id']}: {problem}",
                f"Put the files under {images_key} ({split.image_root}) or fix the records.",
            )
    return f.sentences()


def _splits(cfg) -> dict[str, tuple[str, str, str]]:
    """name -> (json file, image folder, json key) of the splits the config gives."""
    from omegaconf import OmegaConf

    out = {}
    for name, (json_key, images_key) in CUSTOM_SPLITS.items():
        json_file = OmegaConf.select(cfg, json_key, default=None)
        if json_file:
            image_root = OmegaConf.select(cfg, images_key, default=None) or ""
            out[name] = (str(json_file), str(image_root), json_key)
    return out


def _unset_problem(key: str) -> str:
    images = key.replace("_json", "_images")
    return (
        f"{key} is not set: give the data as {key}=path/to/instances.json "
        f"{images}=path/to/images/ (COCO or LVIS format; see the README, 'Your own data')."
    )


def custom_data_problems(cfg, *, need_train: bool = True, need_val: bool = True) -> list[str]:
    """Every problem of the config's custom data, each naming its file, record and fix (empty:
    the data can be used). Reads every image header; the jsons are parsed once per process.

    Args:
        need_train / need_val: the run uses that split (evaluation-only runs need no training
            images; the training json is read anyway: it defines the classes and groups).
    """
    problems = []
    thresholds = check_frequency_thresholds(cfg.custom.frequency_thresholds)
    if isinstance(thresholds, str):
        problems.append(f"custom.frequency_thresholds: {thresholds}.")
    given = _splits(cfg)
    wanted = {"custom_train": True, "custom_val": need_val}
    for name, needed in wanted.items():
        if needed and name not in given:
            problems.append(_unset_problem(CUSTOM_SPLITS[name][0]))
    parsed = {}
    for name, (json_file, image_root, json_key) in given.items():
        images_key = CUSTOM_SPLITS[name][1]
        if not image_root:
            problems.append(f"{images_key} is not set: the folder of the images of {json_file}.")
        try:
            split = read_custom_split(json_file, image_root)
        except CustomDataError as e:
            problems += [f"{json_key}: {p}" for p in e.problems]
            continue
        problems += split.problems
        if split.problems:
            continue
        parsed[name] = split
        if not split.images:
            problems.append(f"{json_file}: no images: the split is empty.")
            continue
        if not split.annotations:
            problems.append(
                f"{json_file}: no annotations: there is nothing to "
                + ("train on." if name == "custom_train" else "score detections against.")
            )
        record_problems, clipped = _record_problems(split)
        problems += record_problems
        if clipped:
            logger.warning(
                f"{json_file}: {clipped} boxes reach past their image; they are clipped to it "
                "(the policy for boxes partly outside the image; boxes entirely outside are "
                "refused)."
            )
        if image_root and (name == "custom_val" or need_train):
            problems += _image_problems(split, images_key)
    if "custom_train" in parsed and "custom_val" in parsed:
        problems += _category_mismatch(parsed["custom_train"], parsed["custom_val"])
    return problems


def _category_mismatch(train: CustomSplit, val: CustomSplit) -> list[str]:
    names = {c["id"]: c["name"] for c in train.categories}
    other = {c["id"]: c["name"] for c in val.categories}
    if names == other:
        return []
    only_train = sorted(set(names) - set(other))
    only_val = sorted(set(other) - set(names))
    renamed = sorted(k for k in set(names) & set(other) if names[k] != other[k])
    parts = [
        f"ids only in the training json: {only_train[:_SHOWN]}" if only_train else "",
        f"ids only in the val json: {only_val[:_SHOWN]}" if only_val else "",
        f"ids named differently: {renamed[:_SHOWN]}" if renamed else "",
    ]
    return [
        f"{val.json_file}: its categories are not those of {train.json_file} ("
        + "; ".join(p for p in parts if p)
        + "): both files must list the same categories (ids and names), also those without "
        "boxes in one split."
    ]


# ----------------------------------------------------------------------------- registration


def _image_counts(split: CustomSplit) -> dict[int, int]:
    """{category id: training images with a non-crowd box of it}."""
    seen = defaultdict(set)
    for a in split.annotations:
        if not a.get("iscrowd", 0):
            seen[a["category_id"]].add(a["image_id"])
    return {c: len(seen[c]) for c in split.category_ids}


def _dataset_dicts(split: CustomSplit, id_map: dict[int, int]) -> list[dict]:
    """Detectron2's ``dataset_dicts`` (boxes in XYWH_ABS, contiguous class ids; LVIS's image
    fields kept with dataset ids, as Detectron2's LVIS loader keeps them)."""
    by_image = defaultdict(list)
    for a in split.annotations:
        by_image[a["image_id"]].append(
            {
                "bbox": list(a["bbox"]),
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[a["category_id"]],
                "iscrowd": int(a.get("iscrowd", 0)),
            }
        )
    dicts = []
    for image in split.images:
        record = {
            "file_name": split.image_path(image),
            "height": image["height"],
            "width": image["width"],
            "image_id": image["id"],
            "annotations": by_image[image["id"]],
        }
        if split.format == "lvis":
            for k in LVIS_IMAGE_FIELDS:
                record[k] = list(image[k])
        dicts.append(record)
    return dicts


def _load(json_file: str, image_root: str, id_map: dict[int, int]) -> list[dict]:
    split = read_custom_split(json_file, image_root)
    if split.problems:  # the preflight refuses these; a direct use of the name gets them too
        raise CustomDataError(split.problems)
    return _dataset_dicts(split, id_map)


def register_custom_data(cfg) -> None:
    """Register the config's custom splits (``custom_train``, ``custom_val``) and fill in what
    comes from the data: ``custom.num_classes`` and ``custom.repeat_thresh`` (when None).

    A no-op for configs without a ``custom`` node. Problems that leave the classes unknown (no
    training json, a file that does not parse) are raised; everything else is for
    :func:`custom_data_problems` (the preflight) to list.

    Raises:
        CustomDataError: the training json cannot give the classes, or ``model.num_classes`` /
            ``custom.num_classes`` disagree with it.
    """
    if "custom" not in cfg:
        return
    given = _splits(cfg)
    if "custom_train" not in given:
        raise CustomDataError([_unset_problem("custom.train_json")])
    thresholds = check_frequency_thresholds(cfg.custom.frequency_thresholds)
    if isinstance(thresholds, str):
        raise CustomDataError([f"custom.frequency_thresholds: {thresholds}."])
    json_file, image_root, _ = given["custom_train"]
    train = read_custom_split(json_file, image_root)
    if train.problems or not train.categories:
        raise CustomDataError(train.problems or [f"{json_file}: no categories."])
    ids = train.category_ids
    id_map = {cid: k for k, cid in enumerate(ids)}
    counts = _image_counts(train)
    metadata = {
        "thing_classes": [c["name"] for c in train.categories],
        "thing_dataset_id_to_contiguous_id": id_map,
        "class_frequency": [frequency_group(counts[c], thresholds) for c in ids],
        "class_image_count": [{"id": c, "image_count": counts[c]} for c in ids],
        "frequency_thresholds": list(thresholds),
    }
    _check_class_count(cfg, len(ids), json_file)
    if cfg.custom.get("repeat_thresh") is None:
        annotated = len({a["image_id"] for a in train.annotations})
        # LVIS's t = 0.001 is "repeat a class in fewer than ~100 of its 100k images": the same
        # rule with the common/frequent boundary of this data
        cfg.custom.repeat_thresh = thresholds[1] / max(annotated, 1)
    for name, (json_file, image_root, _) in given.items():
        split_format = train.format if name == "custom_train" else _format_of(json_file, image_root)
        _register(name, json_file, image_root, split_format, id_map, metadata)


def _format_of(json_file: str, image_root: str) -> str:
    try:
        return read_custom_split(json_file, image_root).format
    except CustomDataError:
        return "coco"  # the preflight reports the file


def _check_class_count(cfg, num_classes: int, json_file: str) -> None:
    from omegaconf import OmegaConf

    problems = []
    given = cfg.custom.get("num_classes")
    if given is not None and given != num_classes:
        problems.append(
            f"custom.num_classes={given}, but {json_file} has {num_classes} categories: the "
            "class count comes from the json; leave custom.num_classes out."
        )
    cfg.custom.num_classes = num_classes
    model_value = OmegaConf.select(cfg, "model.num_classes", default=None)
    if model_value is not None and model_value != num_classes:
        problems.append(
            f"model.num_classes={model_value}, but {json_file} has {num_classes} categories: "
            "custom configs take the class count from the json; leave model.num_classes out."
        )
    if problems:
        raise CustomDataError(problems)


def _register(name, json_file, image_root, split_format, id_map, metadata) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, functools.partial(_load, json_file, image_root, id_map))
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type=split_format,
        **metadata,
    )


def custom_data_summary() -> str:
    """One line per registered custom split: its file, format, classes and groups."""
    lines = []
    for name in CUSTOM_SPLITS:
        if name not in DatasetCatalog.list():
            continue
        meta = MetadataCatalog.get(name)
        groups = Counter(meta.class_frequency)
        lines.append(
            f"{name}: {meta.json_file} ({meta.evaluator_type.upper()} format, "
            f"{len(meta.thing_classes)} classes: {groups['r']} rare, {groups['c']} common, "
            f"{groups['f']} frequent by custom.frequency_thresholds {meta.frequency_thresholds})"
        )
    return "\n".join(lines)
