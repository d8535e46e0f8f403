"""mini-OpenImages: a small long-tailed dataset in the exact OpenImages Challenge 2019 file
formats, so that the OpenImages pipeline (registration, hierarchy expansion, group-of boxes,
verified negatives, the challenge metric) runs and is tested on CPU.

It is derived, seeded, from a mini-LVIS build (its images, objects and verified negatives): the
mini-LVIS categories are the leaf classes; above them a three-level hierarchy (each shape, e.g.
"hexagon", under a family, "round shapes" / "angular shapes", under the root). Per image and
class, three or more instances become one group-of box (covering them all) with probability 1/2.
Image-level labels: every class with a box (Confidence 1), mini-LVIS's negative categories
(Confidence 0), and for each shape family with no object in the image a negative label on the
family itself (expanded to its descendants by the loaders).

Build the default (from the default mini-LVIS under ``datasets/``)::

    .venv/bin/python -m efl_d2.data.mini_openimages --root datasets
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from collections import defaultdict

import numpy as np

from .openimages import CLASSES_FILE, HIERARCHY_FILE, OPENIMAGES_FILES, OPENIMAGES_ROOT_MID

__all__ = ["ROUND_SHAPES", "generate_mini_openimages", "mini_openimages_root"]

ROUND_SHAPES = ("circle", "ring", "crescent")
_TRAIN_BOX_HEADER = (
    "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,"
    "IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
)


def mini_openimages_root(datasets_root: str) -> str:
    return os.path.join(datasets_root, "mini_openimages")


def _image_id(seed: int, split: str, lvis_id: int) -> str:
    # hex ids like the release's (never all digits, so every reader sorts them as strings)
    return "f" + hashlib.sha1(f"{seed}/{split}/{lvis_id}".encode()).hexdigest()[:15]


def _classes(lvis_categories: list[dict]):
    """(MIDs, names, hierarchy tree, leaf MID by LVIS category id)."""
    leaf_mid = {c["id"]: f"/m/mini_{c['id']:03d}" for c in lvis_categories}
    shapes: dict[str, list[dict]] = defaultdict(list)
    for c in lvis_categories:
        shapes[c["name"].rsplit("_", 1)[-1]].append(c)
    families = {"round": "/m/mini_round", "angular": "/m/mini_angular"}
    mids, names = [], []
    tree_families = {f: {"LabelName": mid, "Subcategory": []} for f, mid in families.items()}
    for family, mid in families.items():
        mids.append(mid)
        names.append(f"{family} shapes")
    for shape in sorted(shapes):
        family = "round" if shape in ROUND_SHAPES else "angular"
        mid = f"/m/mini_{shape}"
        mids.append(mid)
        names.append(shape)
        node = {"LabelName": mid, "Subcategory": []}
        for c in sorted(shapes[shape], key=lambda c: c["id"]):
            mids.append(leaf_mid[c["id"]])
            names.append(c["name"])
            node["Subcategory"].append({"LabelName": leaf_mid[c["id"]]})
        tree_families[family]["Subcategory"].append(node)
    tree = {
        "LabelName": OPENIMAGES_ROOT_MID,
        "Subcategory": [t for t in tree_families.values() if t["Subcategory"]],
    }
    family_of_leaf = {
        leaf_mid[c["id"]]: families[
            "round" if c["name"].rsplit("_", 1)[-1] in ROUND_SHAPES else "angular"
        ]
        for c in lvis_categories
    }
    return mids, names, tree, leaf_mid, family_of_leaf


def _fmt(v: float) -> str:
    return f"{v:.6f}"


def generate_mini_openimages(
    datasets_root: str, *, lvis_root: str | None = None, seed: int = 0
) -> str:
    """Write mini-OpenImages under ``datasets_root/mini_openimages`` from the mini-LVIS build of
    ``lvis_root`` (used as it is), or by default from the default mini-LVIS build under
    ``datasets_root`` (built if missing). Returns the folder."""
    from .mini_lvis import ensure_mini_lvis, mini_lvis_paths

    if lvis_root is None:
        lvis_root = datasets_root
        ensure_mini_lvis(lvis_root)  # the default build
    paths = mini_lvis_paths(lvis_root)  # a given build is used as it is
    if not os.path.isfile(paths.json("train")):
        raise FileNotFoundError(f"no mini-LVIS build under {lvis_root} ({paths.json('train')})")
    out = mini_openimages_root(datasets_root)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(paths.json("train")) as f:
        categories = json.load(f)["categories"]
    mids, names, tree, leaf_mid, family_of_leaf = _classes(categories)
    with open(os.path.join(out, CLASSES_FILE), "w", newline="") as f:
        f.writelines(f"{m},{n}\n" for m, n in zip(mids, names))
    with open(os.path.join(out, HIERARCHY_FILE), "w") as f:
        json.dump(tree, f)
    families = sorted(set(family_of_leaf.values()))
    for split, lvis_split in (("train", "train"), ("val", "val")):
        with open(paths.json(lvis_split)) as f:
            data = json.load(f)
        boxes_file, labels_file, image_dir = OPENIMAGES_FILES[split]
        os.makedirs(os.path.join(out, image_dir), exist_ok=True)
        by_image = defaultdict(list)
        for a in data["annotations"]:
            by_image[a["image_id"]].append(a)
        box_rows, label_rows = [], []
        for img in data["images"]:
            image_id = _image_id(seed, split, img["id"])
            src = os.path.join(paths.image_dir(lvis_split), os.path.basename(img["coco_url"]))
            dst = os.path.join(out, image_dir, f"{image_id}.jpg")
            if not os.path.exists(dst):
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            w, h = img["width"], img["height"]
            per_class = defaultdict(list)
            for a in by_image[img["id"]]:
                x, y, bw, bh = a["bbox"]
                per_class[leaf_mid[a["category_id"]]].append(
                    (x / w, (x + bw) / w, y / h, (y + bh) / h)
                )
            present_families = {family_of_leaf[m] for m in per_class}
            for mid, objs in per_class.items():
                if len(objs) >= 3 and rng.random() < 0.5:
                    arr = np.asarray(objs)
                    objs = [(arr[:, 0].min(), arr[:, 1].max(), arr[:, 2].min(), arr[:, 3].max())]
                    group = 1
                else:
                    group = 0
                for x0, x1, y0, y1 in objs:
                    coords = ",".join(_fmt(min(max(v, 0.0), 1.0)) for v in (x0, x1, y0, y1))
                    if split == "train":
                        box_rows.append(f"{image_id},xclick,{mid},1,{coords},0,0,{group},0,0")
                    else:
                        box_rows.append(f"{image_id},{mid},{coords},{group}")
                label_rows.append((image_id, mid, 1))
            for cid in img.get("neg_category_ids", []):
                label_rows.append((image_id, leaf_mid[cid], 0))
            for family in families:
                if family not in present_families:
                    label_rows.append((image_id, family, 0))
        header = (
            _TRAIN_BOX_HEADER
            if split == "train"
            else ("ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf")
        )
        with open(os.path.join(out, boxes_file), "w", newline="") as f:
            f.write(header + "\n" + "".join(r + "\n" for r in box_rows))
        with open(os.path.join(out, labels_file), "w", newline="") as f:
            if split == "train":
                f.write("ImageID,Source,LabelName,Confidence\n")
                f.writelines(f"{i},verification,{m},{c}\n" for i, m, c in label_rows)
            else:
                f.write("ImageID,LabelName,Confidence\n")
                f.writelines(f"{i},{m},{c}\n" for i, m, c in label_rows)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = generate_mini_openimages(args.root, seed=args.seed)
    print(f"mini-OpenImages written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
