"""mini-LVIS: a small, seeded, synthetic long-tailed detection dataset in the exact LVIS v1 format.

Every test, the demo and the rare-class studies of efl_d2 run on it. It is written so that
detectron2's own LVIS loader (``load_lvis_json`` / ``register_lvis_instances``) and the LVIS API
(``lvis.LVIS``, ``LVISEval``) read it unchanged.

Layout under ``root`` (mirrors real LVIS v1 + COCO images)::

    root/lvis/mini_lvis_v1_train.json      LVIS v1 annotations (train)
    root/lvis/mini_lvis_v1_val.json        LVIS v1 annotations (val)
    root/lvis/mini_lvis_v1_meta.json       sidecar: generator parameters, category appearance
                                           specs (shape/colour/texture, fine-grained siblings) and
                                           the deliberately unannotated instances of each split
    root/mini_lvis/train2017/<12-digit id>.jpg
    root/mini_lvis/val2017/<12-digit id>.jpg

Each image's ``coco_url`` is ``http://images.cocodataset.org/<split>2017/<file>``: detectron2
derives ``<split>2017/<file>`` from its last two components and appends it to the image root
``root/mini_lvis/`` (see :class:`MiniLVISPaths`).

What the data looks like:

- Categories are (shape x colour x texture) combinations, e.g. ``red_star`` or
  ``dotted_blue_ring``, drawn with PIL on cluttered, desaturated backgrounds (gradient, noise,
  muted blobs, polygons and lines that belong to no category). Category ids are 1..C in
  alphabetical order of names, as in LVIS (so ids do not encode frequency).
- Train-image counts per category follow a long-tailed, Zipf-like rank law: ``log10(count)``
  falls linearly with the frequency rank from ``max_images_per_category`` to 1 (the shape of
  LVIS v1's sorted category counts in its body). With the defaults the three LVIS groups (rare:
  1-10 images, common: 11-100, frequent: >100) are all populated. ``frequency``,
  ``image_count`` and ``instance_count`` are computed from the generated train annotations.
- Some rare categories are fine-grained "siblings" of a frequent category: same shape and
  colour, different texture (as LVIS's fine-grained categories). The relation is stated in the
  categories' ``def`` and structured in the sidecar (:func:`sibling_pairs`).
- Several objects per image (``objects_per_image``), log-uniform scales from small to large,
  partial occlusion bounded by ``min_visible_fraction`` (each object keeps at least that
  fraction of its area visible). Annotations are the object's full outline (polygon), its box and
  the polygon's area; objects never leave the image.
- Federated labels, as in LVIS: ``neg_category_ids`` lists categories verified absent (a random
  subset of the categories not drawn in the image); ``not_exhaustive_category_ids`` lists
  categories with an extra instance that is drawn but deliberately not annotated (every listed
  category also has annotated instances in that image). The hidden instances are in the sidecar.
- Every category is annotated in at least ``min_val_images_per_category`` val images, so AP_r is
  measurable. The val json carries the same category list (train-derived counts) as train.

The build is deterministic: the same parameters and seed give byte-identical JSONs and images
(for the same Pillow/libjpeg); another seed gives other images and layouts. Category appearances
depend only on the sizes, not on the seed. The build is atomic: everything is written to a
staging folder and moved into place, the JSONs last, so an interrupted build never leaves a
dataset that looks complete.

This module imports only numpy, PIL and :mod:`efl_d2.evaluation.categories` (LVIS's frequency
groups; numpy only). Command line::

    python -m efl_d2.data.mini_lvis --root datasets [--seed 0] [--num-train-images 600] ...
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# The generator's frequency groups are LVIS v1's; the thresholds stay importable from here.
from ..evaluation.categories import (  # noqa: F401
    COMMON_MAX_IMAGES,
    RARE_MAX_IMAGES,
    frequency_group,
)

__all__ = [
    "FORMAT_VERSION",
    "CategorySpec",
    "MiniLVISPaths",
    "ensure_mini_lvis",
    "frequency_group",
    "generate_mini_lvis",
    "is_complete",
    "load_meta",
    "main",
    "mini_lvis_paths",
    "sibling_pairs",
    "unannotated_instances",
]

#: Bumped whenever the generator's output changes for the same parameters; a dataset built by
#: another version is rebuilt by :func:`ensure_mini_lvis`.
FORMAT_VERSION = 1

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "diamond",
    "hexagon",
    "crescent",
    "arrow",
)
#: Saturated colours (RGB). Background clutter is kept desaturated so it does not look like them.
COLOURS = {
    "red": (215, 38, 38),
    "green": (34, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 205, 30),
    "magenta": (205, 45, 190),
    "cyan": (30, 195, 205),
    "orange": (245, 125, 25),
    "purple": (115, 45, 170),
}
TEXTURES = ("solid", "striped", "dotted", "checkered")

_SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}
_JSON_NAMES = {"train": "mini_lvis_v1_train.json", "val": "mini_lvis_v1_val.json"}
_META_NAME = "mini_lvis_v1_meta.json"
_LOCK_NAME = ".mini_lvis.lock"
_STAGING_PREFIX = ".mini_lvis_build_"
_COCO_URL = "http://images.cocodataset.org/{folder}/{file}"
# Fixed (not "now"): the JSONs must be byte-identical across builds.
_DATE = "2022-06-19 00:00:00"


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


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
        return self.image_root + _SPLIT_FOLDERS[split]


def mini_lvis_paths(root: str | os.PathLike) -> MiniLVISPaths:
    """The paths of a mini-LVIS dataset under ``root`` (whether or not it exists)."""
    root = os.path.abspath(os.fspath(root))
    lvis_dir = os.path.join(root, "lvis")
    return MiniLVISPaths(
        root=root,
        json_train=os.path.join(lvis_dir, _JSON_NAMES["train"]),
        json_val=os.path.join(lvis_dir, _JSON_NAMES["val"]),
        image_root=os.path.join(root, "mini_lvis") + os.sep,
        meta=os.path.join(lvis_dir, _META_NAME),
    )


# --------------------------------------------------------------------------------------------
# Categories: appearance, frequency law, fine-grained siblings
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CategorySpec:
    """Appearance and design of one category.

    ``rank`` is the frequency rank (0 = most frequent), ``target_train_images`` the number of
    train images it is placed in, ``sibling_of`` the name of the frequent category it is a
    fine-grained look-alike of (same shape and colour, other texture), or None.
    """

    id: int
    name: str
    shape: str
    colour: str
    texture: str
    rank: int
    target_train_images: int
    sibling_of: str | None

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    @property
    def secondary_rgb(self) -> tuple[int, int, int]:
        """Colour of the texture pattern (stripes, dots, checks) drawn over the base colour."""
        return _secondary(self.rgb)


def _secondary(rgb: Sequence[int]) -> tuple[int, int, int]:
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (250, 250, 245) if luma < 150 else (35, 35, 40)


def _category_name(shape: str, colour: str, texture: str) -> str:
    return f"{colour}_{shape}" if texture == "solid" else f"{texture}_{colour}_{shape}"


def _target_train_counts(num_categories: int, max_images: int) -> list[int]:
    """Train-image count by frequency rank: log10(count) linear in rank, from max_images to 1."""
    if num_categories == 1:
        return [max_images]
    top = math.log10(max_images)
    counts = [
        max(1, round(10 ** (top * (1 - r / (num_categories - 1))))) for r in range(num_categories)
    ]
    return counts


def _design_categories(
    num_categories: int, target_counts: Sequence[int], num_siblings: int | None
) -> list[CategorySpec]:
    """Appearances for categories given by rank. Independent of the seed (fixed tie-break)."""
    groups = [frequency_group(n) for n in target_counts]
    freq_ranks = [r for r, g in enumerate(groups) if g == "f"]
    rare_ranks = [r for r, g in enumerate(groups) if g == "r"]
    if num_siblings is None:
        num_siblings = min(len(freq_ranks), math.ceil(len(rare_ranks) / 3))
    num_siblings = max(0, min(num_siblings, len(freq_ranks), len(rare_ranks)))
    # Siblings spread evenly over the rare group; parents are the most frequent categories.
    sibling_parent: dict[int, int] = {}
    if num_siblings:
        pos = np.linspace(0, len(rare_ranks) - 1, num_siblings).round().astype(int)
        for i, p in enumerate(pos):
            sibling_parent[rare_ranks[int(p)]] = freq_ranks[i]

    combos = [(s, k, t) for s in SHAPES for k in COLOURS for t in TEXTURES]
    if num_categories > len(combos):
        raise ValueError(
            f"num_categories={num_categories} exceeds the {len(combos)} distinct "
            "shape x colour x texture appearances mini-LVIS can draw."
        )
    tie = {c: i for i, c in enumerate(np.random.default_rng(20220619).permutation(len(combos)))}
    used: set[tuple[str, str, str]] = set()
    pair_use: dict[tuple[str, str], int] = {}
    shape_use = dict.fromkeys(SHAPES, 0)
    colour_use = dict.fromkeys(COLOURS, 0)
    texture_use = dict.fromkeys(TEXTURES, 0)
    design: list[tuple[str, str, str]] = []
    for r in range(num_categories):
        if r in sibling_parent:
            s, k, t0 = design[sibling_parent[r]]
            free = [t for t in TEXTURES if (s, k, t) not in used and t != t0]
            if free:
                choice = (s, k, min(free, key=lambda t: (texture_use[t], TEXTURES.index(t))))
            else:  # every texture of that pair is taken: fall back to an ordinary category
                sibling_parent.pop(r)
                choice = None
        else:
            choice = None
        if choice is None:
            choice = min(
                (c for c in combos if c not in used),
                key=lambda c: (
                    pair_use.get(c[:2], 0),
                    shape_use[c[0]],
                    colour_use[c[1]],
                    texture_use[c[2]],
                    tie[combos.index(c)],
                ),
            )
        s, k, t = choice
        used.add(choice)
        pair_use[(s, k)] = pair_use.get((s, k), 0) + 1
        shape_use[s] += 1
        colour_use[k] += 1
        texture_use[t] += 1
        design.append(choice)

    names = [_category_name(*d) for d in design]
    ids = {name: i + 1 for i, name in enumerate(sorted(names))}
    return [
        CategorySpec(
            id=ids[names[r]],
            name=names[r],
            shape=design[r][0],
            colour=design[r][1],
            texture=design[r][2],
            rank=r,
            target_train_images=int(target_counts[r]),
            sibling_of=names[sibling_parent[r]] if r in sibling_parent else None,
        )
        for r in range(num_categories)
    ]


def _category_def(spec: CategorySpec, children: Sequence[str]) -> str:
    tex = "" if spec.texture == "solid" else f" with a {spec.texture} texture"
    article = "an" if spec.colour[0] in "aeiou" else "a"
    text = f"{article} {spec.colour} {spec.shape}{tex} (synthetic mini-LVIS category)"
    if spec.sibling_of:
        text += (
            f"; fine-grained sibling of '{spec.sibling_of}': same shape and colour, "
            f"{spec.texture} instead"
        )
    if children:
        text += "; has fine-grained sibling(s): " + ", ".join(f"'{c}'" for c in children)
    return text


# --------------------------------------------------------------------------------------------
# Shapes (unit polygons) and drawing
# --------------------------------------------------------------------------------------------


def _circle_pts(n: int, r: float = 1.0, cx: float = 0.0, cy: float = 0.0, a0=0.0, a1=None):
    a1 = 2 * math.pi if a1 is None else a1
    t = np.linspace(a0, a1, n)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _unit_shape(shape: str) -> np.ndarray:
    """Outline of ``shape`` as an (N, 2) polygon whose bounding box is centred at 0, long side 2.

    Shapes with a hole (ring) are a single "keyhole" polygon: outer circle one way, inner circle
    the other way, joined by a zero-width seam. Its shoelace area is the annulus area.
    """
    if shape == "circle":
        p = _circle_pts(33)[:-1]
    elif shape == "square":
        p = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    elif shape == "triangle":
        t = np.deg2rad([-90, 30, 150])
        p = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "star":
        t = np.deg2rad(-90 + 36 * np.arange(10))
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        p = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    elif shape == "ring":
        outer = _circle_pts(33, 1.0)
        inner = _circle_pts(33, 0.55)[::-1]
        p = np.concatenate([outer, inner])
    elif shape == "cross":
        a = 0.34
        p = np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
             [-1, a], [-1, -a], [-a, -a]], float,
        )  # fmt: skip
    elif shape == "diamond":
        p = np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]], float)
    elif shape == "hexagon":
        t = np.deg2rad(60 * np.arange(6))
        p = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "crescent":
        # Outer unit circle minus a circle of radius 0.8 centred at (0.5, 0).
        d, r2 = 0.5, 0.8
        x = (1 - r2 * r2 + d * d) / (2 * d)
        th = math.atan2(math.sqrt(1 - x * x), x)
        outer = _circle_pts(25, 1.0, a0=th, a1=2 * math.pi - th)
        ph = math.atan2(math.sqrt(1 - x * x), x - d)
        inner = _circle_pts(21, r2, d, 0.0, a0=2 * math.pi - ph, a1=ph)[1:-1]
        p = np.concatenate([outer, inner])
    elif shape == "arrow":
        p = np.array(
            [[-1, -0.22], [0.2, -0.22], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.22],
             [-1, 0.22]], float,
        )  # fmt: skip
    else:  # pragma: no cover - guarded by SHAPES
        raise ValueError(f"unknown shape {shape!r}")
    p = p - (p.min(0) + p.max(0)) / 2
    return p * (2.0 / (p.max(0) - p.min(0)).max())


_UNIT_SHAPES = {s: _unit_shape(s) for s in SHAPES}


def _polygon_area(flat: Sequence[float]) -> float:
    """Shoelace area of a polygon given as [x0, y0, x1, y1, ...]."""
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _pattern(texture: str, h: int, w: int, x0: int, y0: int, cx, cy, angle, period) -> np.ndarray:
    """Boolean (h, w) mask of the texture's secondary-colour pixels, in the object's frame."""
    if texture == "solid":
        return np.zeros((h, w), bool)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs += x0 + 0.5 - cx
    ys += y0 + 0.5 - cy
    c, s = math.cos(angle), math.sin(angle)
    u = (xs * c + ys * s) / period
    v = (-xs * s + ys * c) / period
    if texture == "striped":
        return ((u + v) / math.sqrt(2)) % 1.0 < 0.45
    if texture == "checkered":
        return (np.floor(u) + np.floor(v)) % 2 == 0
    if texture == "dotted":
        return ((u % 1.0) - 0.5) ** 2 + ((v % 1.0) - 0.5) ** 2 < 0.3**2
    raise ValueError(f"unknown texture {texture!r}")  # pragma: no cover


def _random_muted(rng: np.random.Generator, lo: int = 50, hi: int = 210) -> tuple[int, ...]:
    g = rng.integers(lo, hi)
    return tuple(int(np.clip(g + rng.integers(-18, 19), 0, 255)) for _ in range(3))


def _background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A desaturated, cluttered background: gradient, muted blobs, polygons and lines."""
    c0 = np.array(_random_muted(rng, 70, 200), np.float32)
    c1 = np.array(_random_muted(rng, 70, 200), np.float32)
    a = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xs * math.cos(a) + ys * math.sin(a)) / max(h, w)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    arr = c0 + (c1 - c0) * t[..., None]
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    side = min(h, w)
    for _ in range(int(rng.integers(4, 10))):  # soft blobs
        rx, ry = rng.uniform(0.05, 0.3, 2) * side
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_random_muted(rng))
    for _ in range(int(rng.integers(1, 4))):  # irregular polygons (not any category's shape)
        n = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = rng.uniform(0.3, 1.0, n) * rng.uniform(0.05, 0.2) * side
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        pts = [(float(cx + r * math.cos(q)), float(cy + r * math.sin(q))) for q, r in zip(ang, rad)]
        draw.polygon(pts, fill=_random_muted(rng))
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 2.5))))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):  # lines and curves
        p = rng.uniform(0, 1, 4) * [w, h, w, h]
        draw.line([float(v) for v in p], fill=_random_muted(rng, 20, 235),
                  width=int(rng.integers(1, 4)))  # fmt: skip
    return img


# --------------------------------------------------------------------------------------------
# Layout: which categories go in which images
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Obj:
    rank: int
    hidden: bool
    poly: list[float] | None = None
    bbox: list[float] | None = None
    area: float = 0.0
    full_px: int = 0
    visible_px: int = 0


def _render_image(
    rng: np.random.Generator,
    specs: Sequence[CategorySpec],
    ranks: Sequence[int],
    *,
    size_range: tuple[int, int],
    objects_per_image: tuple[int, int],
    scale_range: tuple[float, float],
    min_visible_fraction: float,
    not_exhaustive_prob: float,
) -> tuple[np.ndarray, list[_Obj]]:
    """Draw one image containing (at least one instance of) each category rank in ``ranks``."""
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
    lo, hi = objects_per_image
    k = len(ranks)
    objs = [_Obj(r, False) for r in ranks]
    total = max(k, int(rng.integers(lo, hi + 1)))
    if k:
        # Extra instances of the categories present, at most 4 more of any one category.
        extra = np.zeros(k, int)
        for _ in range(total - k):
            room = np.flatnonzero(extra < 4)
            if not len(room):
                break
            extra[int(rng.choice(room))] += 1
        for r, e in zip(ranks, extra):
            objs += [_Obj(r, False) for _ in range(int(e))]
        if rng.random() < not_exhaustive_prob:
            objs.append(_Obj(int(ranks[int(rng.integers(k))]), True))
    required = set(range(k))  # first instance of each category must be drawn

    side = min(h, w)
    smin, smax = scale_range
    sizes = np.exp(rng.uniform(math.log(smin), math.log(smax), len(objs))) * side
    order = np.argsort(-sizes, kind="stable")  # big objects first (bottom), small on top

    img = _background(rng, h, w)
    arr = np.asarray(img, dtype=np.float32).copy()
    owner = np.full((h, w), -1, np.int32)
    placed: list[_Obj] = []
    min_size = max(8.0, smin * side * 0.5)
    for oi in order:
        obj = objs[int(oi)]
        spec = specs[obj.rank]
        size = float(sizes[oi])
        accepted = None
        is_required = int(oi) in required
        for attempt in range(120 if is_required else 60):
            if attempt and attempt % 12 == 0:
                size = max(min_size, size * 0.75)
            # A category's first instance is always drawn: past 60 tries, occlusion may exceed
            # the bound (never seen with sensible sizes, but the layout's counts stay exact).
            force = is_required and attempt >= 59
            angle = math.radians(rng.uniform(-25, 25))
            aspect = rng.uniform(0.85, 1.15)
            unit = _UNIT_SHAPES[spec.shape] * [aspect, 1.0 / aspect]
            c, s = math.cos(angle), math.sin(angle)
            pts = unit @ np.array([[c, s], [-s, c]]) * (size / 2)
            ext = pts.max(0) - pts.min(0)
            if ext[0] > w - 3 or ext[1] > h - 3:
                continue
            off = np.array(
                [rng.uniform(1 - pts[:, 0].min(), w - 1 - pts[:, 0].max()),
                 rng.uniform(1 - pts[:, 1].min(), h - 1 - pts[:, 1].max())]
            )  # fmt: skip
            pts = np.round(pts + off, 2)
            x0, y0 = (math.floor(v) for v in pts.min(0))
            x1, y1 = (math.ceil(v) + 1 for v in pts.max(0))
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            mimg = Image.new("L", (x1 - x0, y1 - y0), 0)
            local = [(float(x - x0 - 0.5), float(y - y0 - 0.5)) for x, y in pts]
            ImageDraw.Draw(mimg).polygon(local, fill=255)
            mask = np.asarray(mimg) > 0
            npx = int(mask.sum())
            if npx < 4:
                continue
            covered = owner[y0:y1, x0:x1][mask]
            hits = np.bincount(covered[covered >= 0], minlength=len(placed))
            ok = all(
                (p.visible_px - int(hits[j])) >= min_visible_fraction * p.full_px
                for j, p in enumerate(placed)
                if hits[j]
            )
            if ok or force:
                accepted = (pts, mask, (x0, y0, x1, y1), hits, angle, size)
                break
        if accepted is None:
            if is_required:
                raise RuntimeError(
                    f"mini-LVIS could not place a {spec.name} in a {w}x{h} image: "
                    "image_size is too small for object_scale."
                )
            continue  # an optional extra instance that did not fit
        pts, mask, (x0, y0, x1, y1), hits, angle, size = accepted
        for j, p in enumerate(placed):
            p.visible_px -= int(hits[j])
        owner[y0:y1, x0:x1][mask] = len(placed)
        obj.full_px = obj.visible_px = int(mask.sum())
        flat = [float(v) for v in pts.reshape(-1)]
        obj.poly = flat
        xs, ys = pts[:, 0], pts[:, 1]
        bx, by = float(xs.min()), float(ys.min())
        obj.bbox = [round(bx, 2), round(by, 2), round(float(xs.max()) - bx, 2),
                    round(float(ys.max()) - by, 2)]  # fmt: skip
        obj.area = round(_polygon_area(flat), 2)
        placed.append(obj)

        # Paint: base colour (instance brightness jitter), texture, darker outline.
        base = np.array(spec.rgb, np.float32) * rng.uniform(0.85, 1.1)
        sec = np.array(spec.secondary_rgb, np.float32)
        hh, ww = y1 - y0, x1 - x0
        pat = _pattern(
            spec.texture, hh, ww, x0, y0, float(xs.mean()), float(ys.mean()), angle,
            max(3.0, size / 4.5),
        )  # fmt: skip
        tex = np.where(pat[..., None], sec, base)
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        edge = mask & ~inner
        tex[edge] = base * 0.55
        region = arr[y0:y1, x0:x1]
        region[mask] = tex[mask]

    arr += rng.normal(0.0, rng.uniform(2.0, 7.0), arr.shape).astype(np.float32)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8), placed


# --------------------------------------------------------------------------------------------
# Dataset build
# --------------------------------------------------------------------------------------------


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
    folder = _SPLIT_FOLDERS[split]
    images: list[dict] = []
    anns: list[dict] = []
    hidden: list[dict] = []
    ann_id = first_ann_id
    step = max(1, num_images // 10)
    for i in range(num_images):
        image_id = first_image_id + i
        rng = np.random.default_rng([seed, split_code, 1, i])
        arr, objs = _render_image(rng, specs, per_image[i], **render_kw)
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


def _category_records(specs: Sequence[CategorySpec], train_anns: Sequence[dict]) -> list[dict]:
    img_sets: dict[int, set[int]] = {s.id: set() for s in specs}
    inst: dict[int, int] = dict.fromkeys(img_sets, 0)
    for a in train_anns:
        img_sets[a["category_id"]].add(a["image_id"])
        inst[a["category_id"]] += 1
    children: dict[str, list[str]] = {}
    for s in specs:
        if s.sibling_of:
            children.setdefault(s.sibling_of, []).append(s.name)
    records = []
    for s in sorted(specs, key=lambda s: s.id):
        n_img = len(img_sets[s.id])
        tex = "" if s.texture == "solid" else f" ({s.texture})"
        records.append(
            {
                "id": s.id,
                "name": s.name,
                "synset": f"{s.name}.n.01",
                "synonyms": [s.name, f"{s.colour} {s.shape}{tex}"],
                "def": _category_def(s, sorted(children.get(s.name, []))),
                "frequency": frequency_group(n_img),
                "image_count": n_img,
                "instance_count": inst[s.id],
            }
        )
    return records


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"), ensure_ascii=True)
        f.write("\n")


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
    train_counts = _target_train_counts(num_categories, max_images_per_category)
    specs = _design_categories(num_categories, train_counts, num_siblings)
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
                out_dir = os.path.join(staging, _SPLIT_FOLDERS[split])
                os.makedirs(out_dir)
                outputs[split] = _build_split(
                    split, seed=seed, specs=specs, counts=counts, num_images=n,
                    first_image_id=next_img, first_ann_id=next_ann, out_dir=out_dir,
                    neg_fraction=neg_fraction, render_kw=render_kw, jpeg_quality=jpeg_quality,
                    progress=progress,
                )  # fmt: skip
                next_img += n
                next_ann += len(outputs[split][1])

            categories = _category_records(specs, outputs["train"][1])
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
            for split in ("train", "val"):
                images, anns, _ = outputs[split]
                _write_json(
                    os.path.join(staging, _JSON_NAMES[split]),
                    {**common, "images": images, "annotations": anns, "categories": categories},
                )
            by_id = {c["id"]: c for c in categories}
            meta = {
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
            _write_json(os.path.join(staging, _META_NAME), meta)

            # Swap into place. First make the old dataset (if any) look incomplete.
            os.makedirs(os.path.dirname(paths.json_train), exist_ok=True)
            for p in (paths.json_val, paths.json_train, paths.meta):
                if os.path.lexists(p):
                    os.remove(p)
            os.makedirs(paths.image_root, exist_ok=True)
            for split in ("train", "val"):
                final = paths.image_dir(split)
                if os.path.lexists(final):
                    os.replace(final, os.path.join(staging, "old_" + _SPLIT_FOLDERS[split]))
                os.replace(os.path.join(staging, _SPLIT_FOLDERS[split]), final)
            os.replace(os.path.join(staging, _META_NAME), paths.meta)
            os.replace(os.path.join(staging, _JSON_NAMES["train"]), paths.json_train)
            os.replace(os.path.join(staging, _JSON_NAMES["val"]), paths.json_val)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    if progress:
        groups = {g: [c for c in categories if c["frequency"] == g] for g in "rcf"}
        desc = ", ".join(
            f"{g}: {len(cs)} categories"
            + (f" ({min(c['image_count'] for c in cs)}-{max(c['image_count'] for c in cs)} "
               "train images each)" if cs else "")
            for g, cs in groups.items()
        )  # fmt: skip
        n_ann = len(outputs["train"][1]) + len(outputs["val"][1])
        progress(
            f"mini-LVIS built in {time.perf_counter() - t_start:.1f}s: {num_train_images} train + "
            f"{num_val_images} val images, {n_ann} annotations, {num_categories} categories "
            f"({desc})"
        )
        progress(f"  {paths.json_train}\n  {paths.json_val}\n  images: {paths.image_root}")
    return paths


def ensure_mini_lvis(root: str | os.PathLike, **kwargs: Any) -> MiniLVISPaths:
    """Build mini-LVIS under ``root`` unless a complete build with the same parameters is there.

    Takes the keyword arguments of :func:`generate_mini_lvis`. Safe to call from several
    processes at once: one builds, the others wait for it and reuse its build.
    """
    return generate_mini_lvis(root, reuse_existing=True, **kwargs)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m efl_d2.data.mini_lvis``: build (or reuse) mini-LVIS and print a summary."""
    parser = argparse.ArgumentParser(
        prog="python -m efl_d2.data.mini_lvis",
        description="Generate mini-LVIS, a synthetic long-tailed dataset in the LVIS v1 format.",
    )
    parser.add_argument(
        "--root",
        default=os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
        help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train-images", type=int, default=600)
    parser.add_argument("--num-val-images", type=int, default=150)
    parser.add_argument("--num-categories", type=int, default=40)
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=(224, 320), metavar=("MIN", "MAX")
    )
    parser.add_argument("--max-images-per-category", type=int, default=None)
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if an identical build is present"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final paths")
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, flush=True)

    kwargs = {
        "seed": args.seed,
        "num_train_images": args.num_train_images,
        "num_val_images": args.num_val_images,
        "num_categories": args.num_categories,
        "image_size": tuple(args.image_size),
        "max_images_per_category": args.max_images_per_category,
        "progress": None if args.quiet else say,
    }
    try:
        if args.force:
            paths = generate_mini_lvis(args.root, **kwargs)
        else:
            paths = ensure_mini_lvis(args.root, **kwargs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.quiet:
        say(paths.json_train)
        say(paths.json_val)
    return 0


if __name__ == "__main__":
    sys.exit(main())
