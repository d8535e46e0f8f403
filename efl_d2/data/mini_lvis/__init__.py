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
depend only on the sizes, not on the seed. The build is atomic: the images are rendered into a
staging folder and moved into place, then the JSONs are written (atomically, last), so an
interrupted build never leaves a dataset that looks complete.

The package has one module per job: :mod:`.categories` (appearance, counts, siblings),
:mod:`.rendering` (drawing one image), :mod:`.build` (splits, jsons, the locked and staged build),
:mod:`.paths` (where a build lives, reading its sidecar) and :mod:`.cli`. It imports only numpy,
PIL and :mod:`efl_d2.categories` (LVIS's frequency groups; numpy only). Command line::

    python -m efl_d2.data.mini_lvis --root datasets [--seed 0] [--num-train-images 600] ...
"""

from .build import ensure_mini_lvis, generate_mini_lvis
from .categories import COLOURS, SHAPES, TEXTURES, CategorySpec
from .cli import main
from .paths import (
    FORMAT_VERSION,
    MiniLVISPaths,
    is_complete,
    load_meta,
    mini_lvis_paths,
    sibling_pairs,
    unannotated_instances,
)

__all__ = [
    "COLOURS",
    "FORMAT_VERSION",
    "SHAPES",
    "TEXTURES",
    "CategorySpec",
    "MiniLVISPaths",
    "ensure_mini_lvis",
    "generate_mini_lvis",
    "is_complete",
    "load_meta",
    "main",
    "mini_lvis_paths",
    "sibling_pairs",
    "unannotated_instances",
]
