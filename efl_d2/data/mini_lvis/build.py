"""mini-LVIS build: lay out and render the splits, write LVIS v1 jsons, swap the build into place.

A build renders into a staging folder under the root and holds an inter-process lock on the root,
so concurrent builders wait for one another and an interrupted build never leaves a dataset that
looks complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..._atomic import atomic_write_text
from .categories import CategorySpec, category_records, design_categories, target_train_counts
from .paths import FORMAT_VERSION, SPLIT_FOLDERS, MiniLVISPaths, is_complete, mini_lvis_paths
from .rendering import render_image

__all__ = ["ensure_mini_lvis", "generate_mini_lvis"]

_LOCK_NAME = ".mini_lvis.lock"
_STAGING_PREFIX = ".mini_lvis_build_"
_COCO_URL = "http://images.cocodataset.org/{folder}/{file}"
# Fixed (not "now"): the JSONs must be byte-identical across builds.
_DATE = "2022-06-19 00:00:00"


def _assign_categories(
    rng: np.random.Generator, counts: Sequence[int], num_images: int, capacity: int
) -> list[list[int]]:
    """Place category ``r`` in exactly ``counts[r]`` distinct images, at most ``capacity`` each.

    Images get a random appetite so the number of categories per image varies. Returns, for
    every image, the list of category ranks it contains.
    """
    total = int(sum(counts))
    if total > capacity * num_images:
        raise ValueError(
            f"The category counts need {total} category placements but {num_images} images hold "
            f"at most {capacity * num_images} (objects_per_image max {capacity}): raise the "
            "number of images or objects per image, or lower max_images_per_category."
        )
    if max(counts) > num_images:
        raise ValueError(
            f"A category must appear in {max(counts)} images but the split has only {num_images}: "
            "lower max_images_per_category or raise the number of images."
        )
    appetite = rng.uniform(0.4, 1.6, num_images)
    load = np.zeros(num_images, int)
    cats: list[list[int]] = [[] for _ in range(num_images)]
    order = sorted(range(len(counts)), key=lambda r: -counts[r])
    for r in order:
        free = capacity - load
        weight = appetite * free * (1.0 + 2.0 * (load == 0))  # fill empty images first
        n = int(counts[r])
        if np.count_nonzero(weight) < n:  # pragma: no cover - excluded by the checks above
            raise ValueError("Not enough room to place every category; use more images.")
        chosen = rng.choice(num_images, size=n, replace=False, p=weight / weight.sum())
        for i in sorted(int(c) for c in chosen):
            cats[i].append(r)
            load[i] += 1
    return cats


def _params(**kw: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}


def _build_split(
    split: str,
    *,
    seed: int,
    specs: Sequence[CategorySpec],
    counts: Sequence[int],
    num_images: int,
    first_image_id: int,
    first_ann_id: int,
    out_dir: str,
    neg_fraction: float,
    render_kw: dict[str, Any],
    jpeg_quality: int,
    progress: Callable[[str], None] | None,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Render the images of ``split`` into ``out_dir``; return (images, annotations, hidden)."""
    split_code = {"train": 1, "val": 2}[split]
    layout_rng = np.random.default_rng([seed, split_code, 0])
    per_image = _assign_categories(
        layout_rng, counts, num_images, render_kw["objects_per_image"][1]
    )
    rank_to_id = {s.rank: s.id for s in specs}
    all_ids = sorted(rank_to_id.values())
    folder = SPLIT_FOLDERS[split]
    images: list[dict] = []
    anns: list[dict] = []
    hidden: list[dict] = []
    ann_id = first_ann_id
    step = max(1, num_images // 10)
    for i in range(num_images):
        image_id = first_image_id + i
        rng = np.random.default_rng([seed, split_code, 1, i])
        arr, objs = render_image(rng, specs, per_image[i], **render_kw)
        file_name = f"{image_id:012d}.jpg"
        Image.fromarray(arr).save(os.path.join(out_dir, file_name), "JPEG", quality=jpeg_quality)
        drawn = {rank_to_id[o.rank] for o in objs}
        absent = [c for c in all_ids if c not in drawn]
        neg = [c for c, u in zip(absent, rng.random(len(absent))) if u < neg_fraction]
        not_exhaustive = sorted({rank_to_id[o.rank] for o in objs if o.hidden})
        h, w = arr.shape[:2]
        images.append(
            {
                "id": image_id,
                "license": 1,
                "height": int(h),
                "width": int(w),
                "coco_url": _COCO_URL.format(folder=folder, file=file_name),
                "flickr_url": "",
                "date_captured": _DATE,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": not_exhaustive,
            }
        )
        # Annotation order: by category id, then drawing order (stable and readable).
        for o in sorted(objs, key=lambda o: rank_to_id[o.rank]):
            rec = {
                "image_id": image_id,
                "category_id": rank_to_id[o.rank],
                "bbox": o.bbox,
                "area": o.area,
                "segmentation": [o.poly],
            }
            if o.hidden:
                hidden.append(rec)
            else:
                anns.append({"id": ann_id, **rec})
                ann_id += 1
        if progress and ((i + 1) % step == 0 or i + 1 == num_images):
            progress(f"mini-LVIS {split}: {i + 1}/{num_images} images")
    return images, anns, hidden


@contextlib.contextmanager
def _build_lock(root: str) -> Iterator[None]:
    """An exclusive inter-process lock on ``root`` (POSIX flock; a no-op elsewhere)."""
    path = os.path.join(root, _LOCK_NAME)
    with open(path, "a") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _lvis_jsons(seed: int, outputs: dict, categories: list[dict]) -> dict[str, dict]:
    """The LVIS v1 json of each split."""
    common = {
        "info": {
            "description": "mini-LVIS: synthetic long-tailed detection data in the "
            f"LVIS v1 format, generated by efl_d2 (seed {seed})",
            "url": "",
            "version": f"1.0-mini.{FORMAT_VERSION}",
            "year": 2022,
            "contributor": "efl_d2.data.mini_lvis",
            "date_created": _DATE,
        },
        "licenses": [
            {
                "id": 1,
                "name": "CC0 1.0 (synthetic images)",
                "url": "https://creativecommons.org/publicdomain/zero/1.0/",
            }
        ],
    }
    return {
        split: {**common, "images": images, "annotations": anns, "categories": categories}
        for split, (images, anns, _) in outputs.items()
    }


def _sidecar(params: dict, specs: Sequence[CategorySpec], categories: list[dict], outputs: dict):
    """The meta json: parameters, category appearances and the unannotated instances."""
    by_id = {c["id"]: c for c in categories}
    return {
        "format_version": FORMAT_VERSION,
        "params": params,
        "categories": [
            {
                **dataclasses.asdict(s),
                "rgb": list(s.rgb),
                "secondary_rgb": list(s.secondary_rgb),
                "frequency": by_id[s.id]["frequency"],
            }
            for s in sorted(specs, key=lambda s: s.id)
        ],
        "unannotated": {split: outputs[split][2] for split in ("train", "val")},
    }


def _json_text(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n"


def _swap_into_place(paths: MiniLVISPaths, staging: str, jsons: dict, meta: dict) -> None:
    """Replace the dataset at ``paths`` with the images staged in ``staging`` and these jsons.

    The old jsons go first and the new ones come last (val last of all), so that the dataset
    looks incomplete (:func:`is_complete`) until it is.
    """
    texts = {
        paths.meta: _json_text(meta),
        paths.json_train: _json_text(jsons["train"]),
        paths.json_val: _json_text(jsons["val"]),
    }
    os.makedirs(os.path.dirname(paths.json_train), exist_ok=True)
    for p in (paths.json_val, paths.json_train, paths.meta):
        if os.path.lexists(p):
            os.remove(p)
    os.makedirs(paths.image_root, exist_ok=True)
    for split in ("train", "val"):
        final = paths.image_dir(split)
        if os.path.lexists(final):
            os.replace(final, os.path.join(staging, "old_" + SPLIT_FOLDERS[split]))
        os.replace(os.path.join(staging, SPLIT_FOLDERS[split]), final)
    for path, text in texts.items():
        atomic_write_text(path, text)


def _summary(categories: list[dict], outputs: dict, num_images: dict, seconds: float) -> str:
    groups = {g: [c for c in categories if c["frequency"] == g] for g in "rcf"}
    desc = ", ".join(
        f"{g}: {len(cs)} categories"
        + (f" ({min(c['image_count'] for c in cs)}-{max(c['image_count'] for c in cs)} "
           "train images each)" if cs else "")
        for g, cs in groups.items()
    )  # fmt: skip
    n_ann = len(outputs["train"][1]) + len(outputs["val"][1])
    return (
        f"mini-LVIS built in {seconds:.1f}s: {num_images['train']} train + "
        f"{num_images['val']} val images, {n_ann} annotations, {len(categories)} categories "
        f"({desc})"
    )


def generate_mini_lvis(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    num_train_images: int = 600,
    num_val_images: int = 150,
    num_categories: int = 40,
    image_size: tuple[int, int] = (224, 320),
    objects_per_image: tuple[int, int] = (3, 10),
    object_scale: tuple[float, float] = (0.07, 0.5),
    max_images_per_category: int | None = None,
    min_val_images_per_category: int = 5,
    num_siblings: int | None = None,
    neg_fraction: float = 0.5,
    not_exhaustive_fraction: float = 0.15,
    min_visible_fraction: float = 0.7,
    jpeg_quality: int = 90,
    progress: Callable[[str], None] | None = None,
    reuse_existing: bool = False,
) -> MiniLVISPaths:
    """Build mini-LVIS under ``root`` (always; see :func:`ensure_mini_lvis` to reuse a build).

    Args:
        root: datasets root; writes ``root/lvis/mini_lvis_v1_{train,val,meta}.json`` and
            ``root/mini_lvis/{train,val}2017/*.jpg``, replacing an earlier mini-LVIS there.
        seed: random seed of the images and layouts (category appearances do not depend on it).
        num_train_images, num_val_images: split sizes.
        num_categories: number of categories C (ids 1..C).
        image_size: (min, max) of each image side in pixels; each image draws height and width.
        objects_per_image: (min, max) drawn instances per image (one deliberately unannotated
            instance may come on top).
        object_scale: (min, max) object size as a fraction of the shorter image side,
            sampled log-uniformly.
        max_images_per_category: train images of the most frequent category (default 60 % of
            the train images). Counts fall log-linearly with rank down to 1 image.
        min_val_images_per_category: every category is annotated in at least this many val
            images (val counts otherwise follow the train distribution).
        num_siblings: rare categories made fine-grained look-alikes of frequent ones (default
            a third of the rare categories, at most one per frequent category).
        neg_fraction: probability that a category absent from an image is listed in its
            ``neg_category_ids``.
        not_exhaustive_fraction: probability that an image gets one extra, unannotated instance
            of a category it contains (listed in ``not_exhaustive_category_ids``).
        min_visible_fraction: each object keeps at least this fraction of its area visible.
        jpeg_quality: JPEG quality of the images.
        progress: called with a line of text as the build progresses (e.g. ``print``).
        reuse_existing: return at once if a complete build with the same parameters (and
            generator version) is already at ``root``; :func:`ensure_mini_lvis` sets it.

    Returns:
        The :class:`MiniLVISPaths` of the dataset.
    """
    if num_train_images < 1 or num_val_images < 1 or num_categories < 1:
        raise ValueError("num_train_images, num_val_images and num_categories must be >= 1.")
    lo, hi = (int(v) for v in objects_per_image)
    if not 1 <= lo <= hi:
        raise ValueError(
            f"objects_per_image must be (min, max) with 1 <= min <= max: {objects_per_image}"
        )
    if not 16 <= image_size[0] <= image_size[1]:
        raise ValueError(f"image_size must be (min, max) sides with 16 <= min <= max: {image_size}")
    if not 0 < object_scale[0] <= object_scale[1] <= 0.9:
        raise ValueError(f"object_scale must satisfy 0 < min <= max <= 0.9: {object_scale}")
    if min_val_images_per_category > num_val_images:
        raise ValueError(
            f"min_val_images_per_category={min_val_images_per_category} is more than "
            f"num_val_images={num_val_images}."
        )
    if max_images_per_category is None:
        max_images_per_category = max(1, round(0.6 * num_train_images))
    if not 1 <= max_images_per_category <= num_train_images:
        raise ValueError(
            f"max_images_per_category={max_images_per_category} must be in [1, num_train_images]."
        )
    params = _params(
        seed=seed, num_train_images=num_train_images, num_val_images=num_val_images,
        num_categories=num_categories, image_size=tuple(image_size),
        objects_per_image=(lo, hi), object_scale=tuple(object_scale),
        max_images_per_category=max_images_per_category,
        min_val_images_per_category=min_val_images_per_category, num_siblings=num_siblings,
        neg_fraction=neg_fraction, not_exhaustive_fraction=not_exhaustive_fraction,
        min_visible_fraction=min_visible_fraction, jpeg_quality=jpeg_quality,
    )  # fmt: skip
    t_start = time.perf_counter()
    paths = mini_lvis_paths(root)
    train_counts = target_train_counts(num_categories, max_images_per_category)
    specs = design_categories(num_categories, train_counts, num_siblings)
    ratio = num_val_images / num_train_images
    val_counts = [
        min(num_val_images, max(min_val_images_per_category, round(n * ratio)))
        for n in train_counts
    ]
    render_kw = {
        "size_range": (int(image_size[0]), int(image_size[1])),
        "objects_per_image": (lo, hi),
        "scale_range": (float(object_scale[0]), float(object_scale[1])),
        "min_visible_fraction": float(min_visible_fraction),
        "not_exhaustive_prob": float(not_exhaustive_fraction),
    }

    if reuse_existing and is_complete(paths.root, params):
        if progress:
            progress(f"mini-LVIS is up to date under {paths.root}")
        return paths
    os.makedirs(paths.root, exist_ok=True)
    with _build_lock(paths.root):
        if reuse_existing and is_complete(paths.root, params):  # another process built it
            if progress:
                progress(f"mini-LVIS is up to date under {paths.root}")
            return paths
        # Leftovers of interrupted builds (nobody else builds: we hold the lock).
        for name in os.listdir(paths.root):
            if name.startswith(_STAGING_PREFIX):
                shutil.rmtree(os.path.join(paths.root, name), ignore_errors=True)
        staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=paths.root)
        try:
            outputs = {}
            next_img, next_ann = 1, 1
            for split, counts, n in (
                ("train", train_counts, num_train_images),
                ("val", val_counts, num_val_images),
            ):
                out_dir = os.path.join(staging, SPLIT_FOLDERS[split])
                os.makedirs(out_dir)
                outputs[split] = _build_split(
                    split, seed=seed, specs=specs, counts=counts, num_images=n,
                    first_image_id=next_img, first_ann_id=next_ann, out_dir=out_dir,
                    neg_fraction=neg_fraction, render_kw=render_kw, jpeg_quality=jpeg_quality,
                    progress=progress,
                )  # fmt: skip
                next_img += n
                next_ann += len(outputs[split][1])
            categories = category_records(specs, outputs["train"][1])
            jsons = _lvis_jsons(seed, outputs, categories)
            _swap_into_place(paths, staging, jsons, _sidecar(params, specs, categories, outputs))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    if progress:
        num_images = {"train": num_train_images, "val": num_val_images}
        progress(_summary(categories, outputs, num_images, time.perf_counter() - t_start))
        progress(f"  {paths.json_train}\n  {paths.json_val}\n  images: {paths.image_root}")
    return paths


def ensure_mini_lvis(root: str | os.PathLike, **kwargs: Any) -> MiniLVISPaths:
    """Build mini-LVIS under ``root`` unless a complete build with the same parameters is there.

    Takes the keyword arguments of :func:`generate_mini_lvis`. Safe to call from several
    processes at once: one builds, the others wait for it and reuse its build.
    """
    return generate_mini_lvis(root, reuse_existing=True, **kwargs)
