"""mini-LVIS categories: their appearance, train-image counts by rank and fine-grained siblings."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

# The generator's frequency groups are LVIS v1's.
from ...categories import frequency_group

__all__ = [
    "COLOURS",
    "SHAPES",
    "TEXTURES",
    "CategorySpec",
    "category_records",
    "design_categories",
    "target_train_counts",
]

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


def target_train_counts(num_categories: int, max_images: int) -> list[int]:
    """Train-image count by frequency rank: log10(count) linear in rank, from max_images to 1."""
    if num_categories == 1:
        return [max_images]
    top = math.log10(max_images)
    counts = [
        max(1, round(10 ** (top * (1 - r / (num_categories - 1))))) for r in range(num_categories)
    ]
    return counts


def design_categories(
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


def category_records(specs: Sequence[CategorySpec], train_anns: Sequence[dict]) -> list[dict]:
    """LVIS v1 category records, with frequency and counts measured on the train annotations."""
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
