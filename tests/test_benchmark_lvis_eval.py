"""tools/benchmark_lvis_eval.py: its synthetic LVIS v1 val generator's invariants
(efl_d2.evaluation.synthetic_lvis; not timings), and the table at a tiny scale (metric difference 0
against detectron2's LVIS scoring)."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _tiny_zoo import run_tool

from efl_d2.evaluation import synthetic_lvis

TOOL = run_tool("benchmark_lvis_eval")
REPO = os.path.join(os.path.dirname(__file__), "..")
NUM_IMAGES = 30


@pytest.fixture(scope="module")
def tiny():
    gt, dets = synthetic_lvis.generate(seed=0, num_images=NUM_IMAGES, dets_per_image=300)
    return gt, list(dets)


@pytest.fixture(scope="module")
def categories():
    return synthetic_lvis.lvis_v1_categories()


def test_categories_are_lvis_v1(categories):
    assert [c["id"] for c in categories] == list(range(1, 1204))
    assert collections.Counter(c["frequency"] for c in categories) == {"r": 337, "c": 461, "f": 405}
    assert all(c["image_count"] >= 1 for c in categories)


def test_full_scale_rule(categories):
    layout = synthetic_lvis.full_layout(seed=0, categories=categories)
    train = np.array([c["image_count"] for c in categories])
    expected = np.ceil(train / 5).astype(int)
    counts = synthetic_lvis.val_image_counts(train_image_counts=train)
    np.testing.assert_array_equal(counts, expected)
    assert len(layout.image_ids) == len(set(layout.image_ids.tolist())) == 19_809
    np.testing.assert_array_equal(np.bincount(layout.pair_cat, minlength=1204)[1:], expected)
    pairs = set(zip(layout.pair_image.tolist(), layout.pair_cat.tolist()))
    assert len(pairs) == len(layout.pair_cat) == expected.sum() == 72_702  # distinct images
    assert set(layout.pair_image.tolist()) == set(range(19_809))  # no image without GT
    assert layout.pair_count.min() >= 1 and layout.pair_count.sum() == 244_707
    assert TOOL.num_images_for_scale(scale=1.0) == 19_809
    assert TOOL.num_images_for_scale(scale=0.1) == 1981


def test_ids_unique_and_valid(tiny):
    gt = tiny[0]
    cat_ids = {c["id"] for c in gt["categories"]}
    image_ids = [im["id"] for im in gt["images"]]
    ann_ids = [a["id"] for a in gt["annotations"]]
    assert len(image_ids) == len(set(image_ids)) == NUM_IMAGES
    assert len(ann_ids) == len(set(ann_ids)) and ann_ids == list(range(1, len(ann_ids) + 1))
    images = {im["id"]: im for im in gt["images"]}
    for a in gt["annotations"]:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert a["category_id"] in cat_ids
        assert 0 <= x and 0 <= y and w >= 1 and h >= 1
        assert x + w <= im["width"] + 1e-6 and y + h <= im["height"] + 1e-6
        assert 0 < a["area"] <= w * h and len(a["segmentation"][0]) == 16


def test_federated_labels(tiny):
    gt, _ = tiny
    cat_ids = {c["id"] for c in gt["categories"]}
    positives = collections.defaultdict(set)
    for a in gt["annotations"]:
        positives[a["image_id"]].add(a["category_id"])
    for im in gt["images"]:
        neg, not_exhaustive = set(im["neg_category_ids"]), set(im["not_exhaustive_category_ids"])
        assert len(neg) == len(im["neg_category_ids"]) and neg <= cat_ids
        assert not neg & positives[im["id"]]  # a negative category has no GT in the image
        assert not_exhaustive <= positives[im["id"]] <= cat_ids
        assert positives[im["id"]]
    assert np.mean([len(im["neg_category_ids"]) for im in gt["images"]]) > 1


def test_category_image_counts_follow_the_rule(tiny, categories):
    gt, _ = tiny
    layout = synthetic_lvis.full_layout(seed=0, categories=categories)
    in_prefix = layout.pair_image < NUM_IMAGES
    expected = collections.Counter(layout.pair_cat[in_prefix].tolist())
    pairs = {(a["image_id"], a["category_id"]) for a in gt["annotations"]}
    assert collections.Counter(c for _, c in pairs) == expected
    assert len(gt["annotations"]) == layout.pair_count[in_prefix].sum()


def test_areas_span_small_medium_large(tiny):
    areas = np.array([a["area"] for a in tiny[0]["annotations"]])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any()
    assert (areas >= 96**2).any()


def test_detections(tiny):
    gt, dets = tiny
    images = {im["id"]: im for im in gt["images"]}
    assert [len(d) for d in dets] == [300] * NUM_IMAGES
    scores = []
    for im, per_image in zip(gt["images"], dets):
        assert {d["image_id"] for d in per_image} == {im["id"]}
        s = [d["score"] for d in per_image]
        assert s == sorted(s, reverse=True) and 0 < min(s) and max(s) <= 1
        scores += s
        for d in per_image:
            x, y, w, h = d["bbox"]
            im = images[d["image_id"]]
            assert 1 <= d["category_id"] <= 1203 and w >= 1 and h >= 1
            assert x + w <= im["width"] + 1e-6 and y + h <= im["height"] + 1e-6
    assert len(scores) - len(set(scores)) > 100  # exact score ties
    # some detections are right-class copies of GT boxes
    gt_keys = {(a["image_id"], a["category_id"]) for a in gt["annotations"]}
    hits = sum((d["image_id"], d["category_id"]) in gt_keys for per in dets for d in per)
    assert hits > sum(len(im) for im in gt["annotations"]) / 10


def test_deterministic_and_prefix_consistent(tiny):
    gt, dets = tiny
    gt2, dets2 = synthetic_lvis.generate(seed=0, num_images=NUM_IMAGES, dets_per_image=300)
    assert gt2 == gt and list(dets2) == dets
    small, small_dets = synthetic_lvis.generate(seed=0, num_images=12, dets_per_image=300)
    assert small["images"] == gt["images"][:12]
    assert small["annotations"] == [a for a in gt["annotations"] if a["image_id"] in
                                    {im["id"] for im in small["images"]}]  # fmt: skip
    assert list(small_dets) == dets[:12]
    other, _ = synthetic_lvis.generate(seed=1, num_images=NUM_IMAGES, dets_per_image=300)
    assert other["annotations"] != gt["annotations"]


def test_files_written_once_and_reused(tmp_path, tiny):
    kw = {"work_dir": str(tmp_path), "seed": 0, "num_images": NUM_IMAGES, "dets_per_image": 300}
    meta = TOOL.ensure_data(**kw)
    assert (meta["images"], meta["detections"]) == (NUM_IMAGES, NUM_IMAGES * 300)
    mtime = os.path.getmtime(meta["results"])
    assert TOOL.ensure_data(**kw) == meta and os.path.getmtime(meta["results"]) == mtime
    with open(meta["gt"]) as f:
        assert json.load(f) == tiny[0]
    with open(meta["results"]) as f:
        assert json.load(f) == [d for per in tiny[1] for d in per]
    other = TOOL.data_paths(**dict(kw, dets_per_image=100))
    assert other["results"] != meta["results"]


def test_plan_runs():
    plan = TOOL.plan_runs(scale=1.0, baseline_scale=0.2, skip_baseline=False, workers=[1, 2])
    assert plan == [
        (0.2, "baseline", 0), (0.2, "ours", 0), (0.2, "ours", 1), (0.2, "ours", 2),
        (1.0, "ours", 0), (1.0, "ours", 1), (1.0, "ours", 2), (1.0, "ours-file", 2),
    ]  # fmt: skip
    plan = TOOL.plan_runs(scale=0.5, baseline_scale=0.2, skip_baseline=True, workers=[2])
    assert plan == [(0.5, "ours", 0), (0.5, "ours", 2), (0.5, "ours-file", 2)]


@pytest.mark.slow
def test_table_shows_zero_metric_difference(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--scale", "0.0015", "--workers", "1", "--work-dir", str(tmp_path), "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "benchmark_lvis_eval.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["workers"]) for r in rows] == [
        ("baseline", 0),
        ("ours", 0),
        ("ours", 1),
        ("ours-file", 1),
    ]
    assert all(r["max_abs_diff"] == 0.0 and r["images"] == NUM_IMAGES for r in rows)
    assert all(r["function"].startswith("efl_d2.evaluation") for r in rows[1:])
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ours")]
    assert len(table) == 3 and all(ln.endswith("| 0 |") for ln in table)


def _row(method, workers, scale, wall, ap, **kw):
    metrics = dict.fromkeys(TOOL.METRICS, 20.0) | {"AP": ap}
    return dict(method=method, workers=workers, scale=scale, images=int(scale * 100), load_s=0.1,
                wall_s=wall, cpu_s=wall, peak_rss_main_gib=1.0, peak_rss_worker_max_gib=0.5,
                descendants_seen=workers, metrics=metrics, **kw)  # fmt: skip


def test_compare_and_table_without_running():
    rows = [
        _row("baseline", 0, 0.2, 10.0, 30.0),
        _row("ours", 0, 0.2, 1.0, 30.0),
        _row("ours", 2, 0.2, 2.0, 30.5),
        _row("ours", 0, 1.0, 5.0, 31.0),
        _row("ours", 2, 1.0, 4.0, 31.0),
    ]
    TOOL.compare(rows=rows)
    assert [r["max_abs_diff"] for r in rows] == [0.0, 0.0, 0.5, None, 0.0]
    assert [r["wall_ratio"] for r in rows] == [1.0, 0.1, 0.2, None, None]
    assert [r["reference"] for r in rows][3:] == ["self", "ours in-process"]
    lines = TOOL.markdown_table(rows=rows).splitlines()
    assert len(lines) == 2 + len(rows) and lines[1].count("---") == lines[0].count("|") - 1
    assert lines[2].startswith("| baseline | - | 0.2 (20) |") and "| - | 1.000x | 0 |" in lines[2]
    assert lines[3].endswith("| 0.100x | 0 |") and lines[4].endswith("| 0.5 |")
    assert lines[5].endswith("| n/a | reference |")
    assert lines[6].endswith("| 0.50 | n/a | 0 (vs ours in-process) |")
    assert TOOL.max_abs_diff(a={k: float("nan") for k in TOOL.METRICS},
                             b={k: float("nan") for k in TOOL.METRICS}) == 0.0  # fmt: skip
