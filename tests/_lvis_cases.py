"""Generated LVIS-format evaluation cases and lvis-api references for the evaluation tests.

A case has what makes LVIS scoring subtle: federated negatives and not-exhaustive categories per
image, GT ``ignore`` flags, GT areas on the area-range boundaries (1024, 9216 px), detections of
unverified categories, more detections per image than the limit, exact score ties (scores
rounded to one decimal), detections that copy a GT box exactly, and crowds of overlapping or
identical GT boxes of one category. LVIS records for hand-made cases are built with
:mod:`efl_d2.evaluation.synthetic_lvis` (``lvis_category``, ``lvis_image``, ``box_annotations``).
"""

import copy
import json
import logging
import os
import subprocess
import sys

import numpy as np


def make_case(seed, n_img=40, n_cat=12, max_gt=8, dets_per_img=30):
    """(gt dict, results list) of a random LVIS-format evaluation."""
    rng = np.random.default_rng(seed)
    freqs = rng.choice(list("rcf"), n_cat)
    cats = [
        {"id": 3 * k + 1, "name": f"c{k}", "frequency": str(freqs[k]), "image_count": 1}
        for k in range(n_cat)
    ]
    images, anns = [], []
    for i in range(n_img):
        pos = rng.choice(n_cat, rng.integers(0, 4), replace=False)
        rest = [k for k in range(n_cat) if k not in pos]
        neg = rng.choice(rest, min(len(rest), rng.integers(0, 4)), replace=False)
        not_exhaustive = [int(k) for k in pos if rng.random() < 0.3]
        for k in pos:
            prev = None
            for _ in range(rng.integers(1, max_gt)):
                w, h = rng.uniform(5, 200, 2).round(1)
                x, y = rng.uniform(0, 400), rng.uniform(0, 300)
                if prev is not None and rng.random() < 0.4:
                    # crowds: a GT next to (or exactly on) the previous one, so one detection
                    # overlaps several GT (the best-match and tie rules decide)
                    shift = 0.0 if rng.random() < 0.3 else rng.uniform(-0.1, 0.1)
                    x, y, w, h = prev[0] + shift * prev[2], prev[1], prev[2], prev[3]
                prev = (x, y, w, h)
                area = float(w * h)
                if rng.random() < 0.2:
                    area = float(rng.choice([1024.0, 9216.0, w * h * 0.7]))
                ann = {
                    "id": len(anns) + 1,
                    "image_id": 10 * i + 5,
                    "category_id": cats[k]["id"],
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": area,
                }
                if rng.random() < 0.05:
                    ann["ignore"] = 1
                anns.append(ann)
        images.append(
            {
                "id": 10 * i + 5,
                "width": 640,
                "height": 480,
                "neg_category_ids": [cats[k]["id"] for k in neg],
                "not_exhaustive_category_ids": [cats[k]["id"] for k in not_exhaustive],
            }
        )
    rng.shuffle(anns)
    by_img = {}
    for a in anns:
        by_img.setdefault(a["image_id"], []).append(a)
    results = []
    for im in images:
        gts = by_img.get(im["id"])
        for _ in range(rng.integers(0, dets_per_img)):
            if gts and rng.random() < 0.6:
                a = gts[rng.integers(len(gts))]
                x, y, w, h = a["bbox"]
                j = rng.normal(0, 0.08, 4) * [w, h, w, h]
                box = [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]
                c = a["category_id"] if rng.random() < 0.8 else cats[rng.integers(n_cat)]["id"]
            else:
                box = [*rng.uniform(0, 500, 2), *rng.uniform(1, 150, 2)]
                c = cats[rng.integers(n_cat)]["id"]
            if gts and rng.random() < 0.1:
                box, c = list(gts[0]["bbox"]), gts[0]["category_id"]
            decimals = 1 if rng.random() < 0.5 else 6
            results.append(
                {
                    "image_id": im["id"],
                    "category_id": int(c),
                    "bbox": [float(v) for v in box],
                    "score": float(np.round(rng.random(), decimals)),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, results


def lvis_gt(gt: dict):
    """An ``lvis.LVIS`` of a gt dict (lvis-api reads only files; this skips the file)."""
    from lvis import LVIS

    api = LVIS.__new__(LVIS)
    api.dataset = copy.deepcopy(gt)
    api.logger = logging.getLogger("lvis")
    api._create_index()
    return api


def lvis_api_eval(gt: dict, results: list, *, max_dets=300, image_ids=None, top_k_per_cat=None):
    """lvis-api's evaluation, run unchanged; ``top_k_per_cat`` keeps the K highest-scoring results
    of every category first and lifts the per-image limit (AP-fixed as Dave et al. define it)."""
    from lvis import LVISEval, LVISResults

    from efl_d2.data import patch_lvis_for_numpy2

    patch_lvis_for_numpy2()
    results = copy.deepcopy(results)
    if top_k_per_cat is not None:
        by_cat = {}
        for r in results:
            by_cat.setdefault(r["category_id"], []).append(r)
        results = [
            r
            for rs in by_cat.values()
            for r in sorted(rs, key=lambda r: r["score"], reverse=True)[:top_k_per_cat]
        ]
        max_dets = -1
    api = lvis_gt(gt)
    ev = LVISEval(api, LVISResults(api, results, max_dets=max_dets), "bbox")
    if image_ids is not None:
        ev.params.img_ids = list(image_ids)
    if top_k_per_cat is not None:
        ev.params.max_dets = -1  # only names the AR keys "AR@-1", as Dave et al.'s script
    ev.run()
    return ev


def heavy_imports(statement: str, *, modules=("matplotlib", "torch", "detectron2")) -> list:
    """Which of ``modules`` a fresh interpreter has imported after ``statement``, with efl_d2
    imported as the scoring processes import it (``EFL_D2_NUMPY_ONLY=1``)."""
    code = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps(sorted(m for m in {tuple(modules)!r} if m in sys.modules)))"
    )
    env = {**os.environ, "EFL_D2_NUMPY_ONLY": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
