"""mini-LVIS rendering: category shapes and textures on a cluttered background, one image."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .categories import SHAPES, CategorySpec

__all__ = ["DrawnObject", "render_image"]


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


@dataclasses.dataclass
class DrawnObject:
    """One instance drawn in an image: its category rank, whether it is left unannotated, and its
    outline polygon, box and area once placed (``*_px``: its pixels, and those still visible)."""

    rank: int
    hidden: bool
    poly: list[float] | None = None
    bbox: list[float] | None = None
    area: float = 0.0
    full_px: int = 0
    visible_px: int = 0


def render_image(
    rng: np.random.Generator,
    specs: Sequence[CategorySpec],
    ranks: Sequence[int],
    *,
    size_range: tuple[int, int],
    objects_per_image: tuple[int, int],
    scale_range: tuple[float, float],
    min_visible_fraction: float,
    not_exhaustive_prob: float,
) -> tuple[np.ndarray, list[DrawnObject]]:
    """Draw one image containing (at least one instance of) each category rank in ``ranks``."""
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
    lo, hi = objects_per_image
    k = len(ranks)
    objs = [DrawnObject(r, False) for r in ranks]
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
            objs += [DrawnObject(r, False) for _ in range(int(e))]
        if rng.random() < not_exhaustive_prob:
            objs.append(DrawnObject(int(ranks[int(rng.integers(k))]), True))
    required = set(range(k))  # first instance of each category must be drawn

    side = min(h, w)
    smin, smax = scale_range
    sizes = np.exp(rng.uniform(math.log(smin), math.log(smax), len(objs))) * side
    order = np.argsort(-sizes, kind="stable")  # big objects first (bottom), small on top

    img = _background(rng, h, w)
    arr = np.asarray(img, dtype=np.float32).copy()
    owner = np.full((h, w), -1, np.int32)
    placed: list[DrawnObject] = []
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
