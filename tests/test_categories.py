"""efl_d2.categories (frequency groups, per-category AP), the evaluation's per-category report and
plots: against lvis-api's own evaluation, closed-form cases and a round trip of the written
files."""

import ast
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from _lvis_cases import heavy_imports
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from efl_d2 import categories as cat
from efl_d2.data import mini_lvis, patch_lvis_for_numpy2
from efl_d2.evaluation import lvis_arrays, plots, score_lvis
from efl_d2.evaluation import per_category_report as report
from efl_d2.evaluation.synthetic_lvis import box_annotations, lvis_category, lvis_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --------------------------------------------------------------------------- a tiny LVIS val set

# id -> (frequency, GT boxes as (image, XYWH)); category 6 has no GT (AP undefined).
GT = {
    1: ("r", [(1, [10, 10, 20, 20])]),
    2: ("r", [(2, [30, 30, 20, 20])]),
    3: ("c", [(1, [50, 50, 20, 20])]),
    4: ("c", [(1, [10, 60, 30, 30]), (2, [40, 40, 20, 20])]),
    5: ("f", [(3, [20, 20, 40, 40])]),
    6: ("f", []),
}
DETECTIONS = [
    # 1: the exact box -> AP 1
    {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
    # 2: nothing detected -> AP 0
    # 3: shifted by 3 px, IoU 340/460 = 0.739: a hit at IoU 0.50..0.70 (5 of 10) -> AP 0.5
    {"image_id": 1, "category_id": 3, "bbox": [53, 50, 20, 20], "score": 0.8},
    # 4: one of two boxes, ranked first: precision 1 up to recall 0.5 -> AP 51/101
    {"image_id": 1, "category_id": 4, "bbox": [10, 60, 30, 30], "score": 0.7},
    # 5: a false positive ranked above the hit: interpolated precision 1/2 everywhere -> AP 0.5
    {"image_id": 3, "category_id": 5, "bbox": [70, 70, 20, 20], "score": 0.95},
    {"image_id": 3, "category_id": 5, "bbox": [20, 20, 40, 40], "score": 0.6},
]
EXPECTED_AP = {1: 1.0, 2: 0.0, 3: 0.5, 4: 51 / 101, 5: 0.5, 6: math.nan}
TRAIN_IMAGES = {1: 3, 2: 10, 3: 11, 4: 100, 5: 101, 6: 400}


def _lvis_gt() -> dict:
    cats = [lvis_category(i, f, TRAIN_IMAGES[i]) for i, (f, _) in GT.items()]
    images = [lvis_image(i, neg_category_ids=[6]) for i in (1, 2, 3)]
    boxes = [(im, c, b) for c, (_, bs) in GT.items() for im, b in bs]
    anns = box_annotations(boxes)
    return {"images": images, "annotations": anns, "categories": cats}


@pytest.fixture(scope="module")
def lvis_run(tmp_path_factory):
    from lvis import LVIS, LVISEval, LVISResults

    patch_lvis_for_numpy2()
    path = tmp_path_factory.mktemp("gt") / "val.json"
    path.write_text(json.dumps(_lvis_gt()))
    gt = LVIS(str(path))
    ev = LVISEval(gt, LVISResults(gt, [dict(d) for d in DETECTIONS], max_dets=300), "bbox")
    ev.run()
    return ev


def _rows(ev):
    return cat.per_category_ap(ev.eval["precision"], ev.params.cat_ids, ev.lvis_gt.cats)


def test_per_category_ap_matches_closed_form_and_lvis_group_means(lvis_run):
    rows = _rows(lvis_run)
    assert [r["category_id"] for r in rows] == list(GT)
    assert [r["frequency"] for r in rows] == [f for f, _ in GT.values()]
    assert [r["image_count"] for r in rows] == list(TRAIN_IMAGES.values())
    np.testing.assert_allclose(
        [r["ap"] for r in rows], list(EXPECTED_AP.values()), atol=1e-12, equal_nan=True
    )

    summary = cat.per_group_summary(rows)
    results = lvis_run.get_results()
    # Mean of two numbers vs lvis-api's mean over all T x R x K entries: the same value; only
    # the summation order differs, hence 1e-12 rather than bit equality.
    for g in cat.FREQUENCY_GROUPS:
        assert summary[g]["ap"] == pytest.approx(results[f"AP{g}"], rel=1e-12, abs=1e-15), g
    assert summary["r"]["ap"] == pytest.approx(0.5)  # the AP-0 category counts
    assert summary["c"]["ap"] == pytest.approx((0.5 + 51 / 101) / 2)
    assert summary["f"]["ap"] == pytest.approx(0.5)  # the category without GT does not
    assert {g: s["num_categories"] for g, s in summary.items()} == {"r": 2, "c": 2, "f": 1}


def test_per_category_ap_of_efl_d2_scoring_is_lvis_apis(lvis_run):
    # the evaluator's rows: per_category_ap on efl_d2.evaluation's precision array
    scores = score_lvis(lvis_arrays(_lvis_gt(), [dict(d) for d in DETECTIONS]))
    rows = cat.per_category_ap(scores.precision, scores.cat_ids.tolist(), _lvis_gt()["categories"])
    expected = _rows(lvis_run)
    for key in ("category_id", "name", "frequency", "image_count"):
        assert [r[key] for r in rows] == [r[key] for r in expected]
    np.testing.assert_array_equal([r["ap"] for r in rows], [r["ap"] for r in expected])


def test_per_category_ap_closed_form_array():
    # [T=2, R=3, K=3, A=2]
    p = np.full((2, 3, 3, 2), -1.0)
    p[:, :, 0, 0] = [[0.2, 0.4, 0.6], [0.0, 1.0, 0.8]]  # mean 0.5
    p[0, :, 1, 0] = [1.0, 1.0, 0.5]  # only some entries valid: mean of those, 2.5 / 3
    p[:, :, 2, 1] = 0.25  # valid at area 1 only
    cats = [{"id": i, "name": f"n{i}", "frequency": "c", "image_count": 50} for i in (7, 8, 9)]
    rows = cat.per_category_ap(p, [7, 8, 9], cats)
    assert [r["name"] for r in rows] == ["n7", "n8", "n9"]
    assert rows[0]["ap"] == pytest.approx(0.5) and rows[1]["ap"] == pytest.approx(2.5 / 3)
    assert math.isnan(rows[2]["ap"])
    assert cat.per_category_ap(p, [7, 8, 9], cats, area_index=1)[2]["ap"] == 0.25
    with pytest.raises(ValueError, match="K = 2"):
        cat.per_category_ap(p, [7, 8], cats)
    with pytest.raises(ValueError, match=r"\[10\]"):
        cat.per_category_ap(p, [7, 8, 10], cats)


def test_frequency_group_boundaries():
    got = {n: cat.frequency_group(n) for n in (0, 1, 10, 11, 100, 101, 10_000)}
    assert got == {0: "r", 1: "r", 10: "r", 11: "c", 100: "c", 101: "f", 10_000: "f"}
    with pytest.raises(ValueError, match=">= 0"):
        cat.frequency_group(-1)
    # the generator uses the same rule
    assert mini_lvis.categories.frequency_group is cat.frequency_group


def test_categories_in_sorted_id_order_and_missing_frequency_is_an_error():
    cats = [
        {"id": 30, "name": "c30", "frequency": "f", "image_count": 500},
        {"id": 10, "name": "c10", "frequency": "r", "image_count": 2},
        {"id": 20, "frequency": "c"},
    ]
    assert cat.category_frequencies(cats) == ["r", "c", "f"]
    assert cat.category_records({c["id"]: c for c in cats})[1] == {
        "category_id": 20,
        "name": "20",
        "frequency": "c",
        "image_count": 0,
    }
    broken = [*cats, {"id": 40, "name": "x"}, {"id": 5, "frequency": "rare"}]
    for reader in (cat.category_records, cat.category_frequencies):
        with pytest.raises(ValueError, match=r"2 categories \(ids \[5, 40\]\) have no LVIS"):
            reader(broken)
    with pytest.raises(ValueError, match="no LVIS 'frequency'"):
        cat.per_category_ap(np.zeros((1, 1, 5, 1)), [5, 10, 20, 30, 40], broken)
    assert cat.category_frequencies(broken, allow_unknown=True) == ["?", "r", "c", "f", "?"]


def test_category_image_counts_and_frequency_order():
    def ann(c, crowd=0):
        return {"category_id": c, "iscrowd": crowd}

    dicts = [
        {"annotations": [ann(0), ann(0), ann(2)]},  # an image counts once per category
        {"annotations": [ann(2), ann(1, crowd=1)]},  # crowd boxes do not count
        {},
    ]
    counts = cat.category_image_counts(dicts, 4)
    assert counts.dtype == np.int64 and counts.tolist() == [1, 0, 2, 0]
    assert cat.frequency_order(counts).tolist() == [2, 0, 1, 3]  # ties: lower index first


def test_report_round_trip(tmp_path):
    rows = [
        {"category_id": 3, "name": 'a, "quoted" name', "frequency": "r", "image_count": 4,
         "ap": 1 / 3},
        {"category_id": 7, "name": "plain", "frequency": "f", "image_count": 900, "ap": math.nan},
        {"category_id": 9, "name": "zero", "frequency": "c", "image_count": 12, "ap": 0.0},
    ]  # fmt: skip
    paths = report.write_per_category_report(
        rows, str(tmp_path / "out"), prefix="val", val_instance_counts={3: 5, 9: 1}
    )
    assert paths == {
        "csv": str(tmp_path / "out" / "val.csv"),
        "json": str(tmp_path / "out" / "val.json"),
    }
    header = (tmp_path / "out" / "val.csv").read_text().splitlines()[0]
    assert header == "category_id,name,frequency,image_count,ap,val_instance_count"
    expected = [{**r, "val_instance_count": n} for r, n in zip(rows, (5, 0, 1))]

    def plain(table):  # NaN != NaN: compare it as None
        nan = [k for k, v in table[0].items() if isinstance(v, float)]
        return [{k: None if k in nan and math.isnan(v) else v for k, v in r.items()} for r in table]

    from_csv = report.read_per_category_report(paths["csv"])
    from_json = report.read_per_category_report(paths["json"])
    assert plain(from_csv) == plain(from_json) == plain(expected)
    assert json.loads((tmp_path / "out" / "val.json").read_text())[1]["ap"] is None
    assert sorted(os.listdir(tmp_path / "out")) == ["val.csv", "val.json"]  # no temp files

    # without instance counts: the five columns only
    report.write_per_category_report(rows[:1], str(tmp_path / "out"), prefix="short")
    assert list(report.read_per_category_report(str(tmp_path / "out" / "short.csv"))[0]) == list(
        report.REPORT_COLUMNS
    )


def test_report_write_is_atomic(tmp_path, monkeypatch):
    row = {"category_id": 1, "name": "a", "frequency": "r", "image_count": 1, "ap": 0.5}
    paths = report.write_per_category_report([row], str(tmp_path))
    before = {k: Path(p).read_text() for k, p in paths.items()}

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        report.write_per_category_report([{**row, "ap": 0.25}], str(tmp_path))
    assert {k: Path(p).read_text() for k, p in paths.items()} == before
    assert sorted(os.listdir(tmp_path)) == ["per_category_ap.csv", "per_category_ap.json"]


def test_per_category_ap_chart_has_one_legend_entry_per_group_in_its_colour():
    fig = Figure()
    ax = fig.subplots()
    letters = ["f", "f", "c", "r", "c"]
    bars = plots.plot_per_category_ap(ax, ap=[0.5, 0.25, math.nan, 0.1, 0.0], frequency=letters)
    np.testing.assert_allclose([b.get_height() for b in bars], [50, 25, 0, 10, 0])
    assert [b.get_facecolor() for b in bars] == [to_rgba(cat.FREQUENCY_COLORS[g]) for g in letters]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["frequent", "common", "rare"]
    colours = [h.get_facecolor() for h in legend.legend_handles]
    assert colours == [to_rgba(cat.FREQUENCY_COLORS[g]) for g in ("f", "c", "r")]
    assert len(set(colours)) == 3


def test_no_library_module_selects_a_matplotlib_backend():
    offenders = []
    for root, _, files in os.walk(os.path.join(REPO, "efl_d2")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("use", "switch_backend")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("matplotlib", "plt")
                ):
                    offenders.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
    assert not offenders


def test_categories_and_report_import_neither_matplotlib_nor_torch():
    # as the scoring processes import them (efl_d2 without its registrations)
    assert heavy_imports("import efl_d2.categories, efl_d2.evaluation.per_category_report") == []


def test_lvis_json_metadata_names_the_file_of_a_category_without_frequency(tmp_path):
    from efl_d2.data import DatasetFileError, lvis_json_metadata

    path = tmp_path / "custom.json"
    cats = [{"id": 2, "name": "b", "image_count": 5, "frequency": "r"}, {"id": 1, "name": "a"}]
    path.write_text(json.dumps({"categories": cats}))
    with pytest.raises(DatasetFileError, match=r"custom.json: 1 categories \(ids \[1\]\)"):
        lvis_json_metadata(str(path))
    cats[1].update(frequency="f", image_count=200)
    path.write_text(json.dumps({"categories": cats}))
    assert lvis_json_metadata(str(path))["class_frequency"] == ["f", "r"]
