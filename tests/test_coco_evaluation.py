"""efl_d2.evaluation.COCOEvaluator: boxes scored exactly as pycocotools' COCOeval scores the
results file it writes, AP per frequency group, the per-category report, on a small COCO-format
dataset with non-contiguous category ids."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import coco_evaluation
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from efl_d2.evaluation import COCOEvaluator, read_per_category_report

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
CATEGORIES = {3: "cat", 10: "dog", 42: "kite", 7: "bus", 100: "yak", 55: "oboe"}  # id: name
# 55 has only a crowd box and 100 no box at all: neither has ground truth for COCOeval.
NO_GT = {55, 100}
# hand-picked train image counts; the evaluator only copies them into the report
IMAGE_COUNT = {3: 150, 7: 40, 10: 120, 42: 35, 55: 4, 100: 2}
FREQUENCY = {  # "r" of the first holds only categories without ground truth
    "empty_rare": {3: "f", 7: "c", 10: "f", 42: "c", 55: "r", 100: "r"},
    "all_groups": {3: "r", 7: "f", 10: "c", 42: "r", 55: "c", 100: "f"},
}
WIDTH, HEIGHT = 640, 480
DENSE_IMAGE = 13  # 30 GT boxes of "bus" below 110 higher-scoring false positives
DENSE_CATEGORY = 7


# ----------------------------------------------------------------------------- the dataset


def coco_gt() -> dict:
    """COCO-format GT: areas in all three ranges, a crowd box, a category with only a crowd box,
    one without boxes, and the dense image."""
    boxes = [  # (image id, category id, xywh, iscrowd)
        (1, 3, [10, 10, 20, 20], 0),  # small (400 px)
        (1, 3, [100, 100, 60, 50], 0),  # medium
        (1, 10, [200, 150, 150, 120], 0),  # large
        (1, 7, [400, 300, 25, 30], 0),
        (2, 42, [50, 60, 80, 90], 0),
        (2, 42, [300, 200, 200, 150], 0),
        (2, 3, [20, 20, 40, 40], 0),
        (2, 3, [0, 0, 300, 200], 1),  # crowd: detections inside it are ignored
        (5, 10, [30, 40, 15, 15], 0),
        (5, 7, [100, 100, 120, 100], 0),
        (5, 55, [200, 200, 100, 100], 1),
        (8, 3, [400, 100, 50, 50], 0),
        (8, 10, [10, 300, 200, 150], 0),
        (8, 42, [500, 400, 20, 20], 0),
    ]
    boxes += [  # a 6 x 5 grid of small boxes in the top half of the dense image
        (DENSE_IMAGE, DENSE_CATEGORY, [30 + 100 * i, 20 + 45 * j, 20, 20], 0)
        for i in range(6)
        for j in range(5)
    ]
    return {
        "images": [
            {"id": i, "width": WIDTH, "height": HEIGHT, "file_name": f"{i}.jpg"}
            for i in (1, 2, 5, 8, DENSE_IMAGE)
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": img,
                "category_id": cat,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": crowd,
            }
            for k, (img, cat, box, crowd) in enumerate(boxes)
        ],
        "categories": [{"id": i, "name": n} for i, n in CATEGORIES.items()],
    }


def detections(gt: dict, seed: int = 0) -> dict:
    """``{image id: [(dataset category id, xywh, score)]}``: tight and loose matches, misses,
    duplicates, wrong classes, false positives, detections on the crowd box; scores from a few
    values, so there are ties; on the dense image, more than 100 detections of one category with
    every true positive below the 100th."""
    rng = np.random.default_rng(seed)
    scores = [0.95, 0.9, 0.8, 0.6, 0.6, 0.4, 0.2]
    dets = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        if a["image_id"] == DENSE_IMAGE:
            continue
        x, y, w, h = a["bbox"]
        tight = [x + 0.08 * w * rng.uniform(-1, 1), y + 0.08 * h * rng.uniform(-1, 1), w, h]
        own = dets[a["image_id"]]
        r = rng.random()
        box = None  # missed
        if a["iscrowd"] or r < 0.5:
            box = tight
        elif r < 0.85:  # loose: IoU 0.54 to 0.82, a match at the lower IoU thresholds only
            box = [x + rng.uniform(0.1, 0.3) * w, y, w, h]
        if box is not None:
            own.append((a["category_id"], box, rng.choice(scores)))
            if rng.random() < 0.4:  # duplicate
                own.append((a["category_id"], [box[0] + 1, box[1] + 1, w, h], rng.choice(scores)))
        if rng.random() < 0.3:  # wrong class on the right box
            own.append((int(rng.choice([3, 7, 100])), tight, rng.choice(scores)))
    for own in dets.values():  # false positives anywhere
        for _ in range(3):
            x, y = rng.uniform(0, WIDTH - 60), rng.uniform(0, HEIGHT - 60)
            cat = int(rng.choice(list(CATEGORIES)))
            own.append((cat, [x, y, rng.uniform(5, 60), rng.uniform(5, 60)], 0.6))
    dense = dets[DENSE_IMAGE]
    for k in range(110):  # bottom half, no GT there
        box = [5 * k % (WIDTH - 30), 300 + 7 * (k % 20), 25, 20]
        dense.append((DENSE_CATEGORY, box, 0.99 - k * 0.004))
    for a in gt["annotations"]:
        if a["image_id"] == DENSE_IMAGE:
            dense.append((DENSE_CATEGORY, [v + 1 for v in a["bbox"][:2]] + a["bbox"][2:], 0.3))
    return dets


def model_outputs(dets: dict) -> list:
    """(inputs, outputs) per image as a detector gives them: XYXY boxes, contiguous classes."""
    contiguous = {cid: k for k, cid in enumerate(sorted(CATEGORIES))}
    pairs = []
    for img, rows in dets.items():
        inst = Instances((HEIGHT, WIDTH))
        xywh = torch.tensor([box for _, box, _ in rows], dtype=torch.float32).reshape(-1, 4)
        inst.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))
        inst.scores = torch.tensor([s for _, _, s in rows], dtype=torch.float32)
        inst.pred_classes = torch.tensor([contiguous[c] for c, _, _ in rows], dtype=torch.int64)
        pairs.append(({"image_id": img, "height": HEIGHT, "width": WIDTH}, {"instances": inst}))
    return pairs


@pytest.fixture
def register(tmp_path):
    """``register(name, **extra metadata)``: the GT json under ``tmp_path`` in MetadataCatalog,
    as a user's COCO-format dataset is registered; removed again after the test."""
    path = tmp_path / "val.json"
    path.write_text(json.dumps(coco_gt()))
    names = []

    def _register(name, **extra):
        ids = sorted(CATEGORIES)
        MetadataCatalog.get(name).set(
            json_file=str(path),
            image_root=str(tmp_path),
            evaluator_type="coco",
            thing_classes=[CATEGORIES[i] for i in ids],
            thing_dataset_id_to_contiguous_id={i: k for k, i in enumerate(ids)},
            **extra,
        )
        names.append(name)
        return str(path)

    yield _register
    for name in names:
        MetadataCatalog.remove(name)


def frequency_metadata(groups: dict) -> dict:
    ids = sorted(CATEGORIES)
    return {
        "class_frequency": [groups[i] for i in ids],
        "class_image_count": [{"id": i, "image_count": IMAGE_COUNT[i]} for i in ids],
    }


def run(evaluator, pairs) -> dict:
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    return evaluator.evaluate()


@pytest.fixture(autouse=True)
def _no_fast_cocoeval(monkeypatch):
    """Detectron2's C++ COCOeval_opt (not built everywhere) must not be what scores."""

    class Forbidden:
        def __init__(self, *args, **kwargs):
            raise AssertionError("COCOeval_opt used")

    monkeypatch.setattr(coco_evaluation, "COCOeval_opt", Forbidden)


# ----------------------------------------------------------------------------- references


def pycocotools_eval(gt_path: str, results_path: str, max_dets=None) -> COCOeval:
    """pycocotools' own evaluation of a results file, default parameters unless ``max_dets``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        ev = COCOeval(coco_gt, coco_gt.loadRes(results_path), "bbox")
        if max_dets is not None:
            ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def category_aps(ev: COCOeval) -> dict:
    """``{category id: AP}`` (area all, last maxDets; NaN without GT) from the precision array."""
    out = {}
    for k, cid in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        out[cid] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
    return out


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("groups", sorted(FREQUENCY))
def test_boxes_score_as_pycocotools_with_groups_and_report(tmp_path, register, groups):
    from detectron2.utils.events import EventStorage

    gt_path = register(f"efl_coco_test_{groups}", **frequency_metadata(FREQUENCY[groups]))
    out_dir = tmp_path / "eval"
    dets = detections(coco_gt())
    with EventStorage() as storage:
        res = run(
            COCOEvaluator(f"efl_coco_test_{groups}", output_dir=str(out_dir)), model_outputs(dets)
        )["bbox"]

    # the results file carries dataset category ids, detection by detection
    saved = json.loads((out_dir / "coco_instances_results.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in saved] == [
        (img, cat) for img, rows in dets.items() for cat, _, _ in rows
    ]

    ev = pycocotools_eval(gt_path, str(out_dir / "coco_instances_results.json"))
    assert ev.params.maxDets == [1, 10, 100]
    assert {m: res[m] for m in METRICS} == {
        m: float(ev.stats[i] * 100) for i, m in enumerate(METRICS)
    }
    # a case that discriminates
    assert 5 < res["AP"] < 95 and res["AP75"] < res["AP50"] and all(res[m] > 0 for m in METRICS)

    aps = category_aps(ev)
    assert {cid for cid, ap in aps.items() if math.isnan(ap)} == NO_GT
    for cid, name in CATEGORIES.items():
        assert res[f"AP-{name}"] == pytest.approx(100 * aps[cid], rel=1e-12, nan_ok=True)
    for g in "rcf":
        members = [aps[c] for c, f in FREQUENCY[groups].items() if f == g and c not in NO_GT]
        if members:
            assert res[f"AP{g}"] == pytest.approx(100 * sum(members) / len(members), rel=1e-12)
        else:
            assert math.isnan(res[f"AP{g}"])
    assert math.isnan(res["APr"]) == (groups == "empty_rare")

    instances = {}
    for a in coco_gt()["annotations"]:
        if not a["iscrowd"]:
            instances[a["category_id"]] = instances.get(a["category_id"], 0) + 1
    for path in ("per_category_ap_bbox.csv", "per_category_ap_bbox.json"):
        rows = read_per_category_report(str(out_dir / path))
        assert [r["category_id"] for r in rows] == sorted(CATEGORIES)
        for r in rows:
            cid = r["category_id"]
            assert r["name"] == CATEGORIES[cid]
            assert r["frequency"] == FREQUENCY[groups][cid]
            assert r["image_count"] == IMAGE_COUNT[cid]
            assert r["val_instance_count"] == instances.get(cid, 0)
            assert r["ap"] == pytest.approx(aps[cid], rel=1e-12, nan_ok=True)

    hists = {h["tag"]: h["num"] for h in storage._histograms}
    expected = {}
    for c, g in FREQUENCY[groups].items():
        if c not in NO_GT:
            expected[f"bbox/per_category_AP_{g}"] = expected.get(f"bbox/per_category_AP_{g}", 0) + 1
    assert hists == expected


def test_more_than_100_detections_per_image_are_cut_as_pycocotools_does(tmp_path, register):
    """On the dense image every true positive ranks below 100 false positives: pycocotools'
    default maxDets drops them, a larger ``max_dets_per_image`` keeps them."""
    gt_path = register("efl_coco_test_dense")
    pairs = model_outputs(detections(coco_gt()))
    assert len(pairs[-1][1]["instances"]) > 100
    res = run(COCOEvaluator("efl_coco_test_dense", output_dir=str(tmp_path)), pairs)["bbox"]
    results_path = str(tmp_path / "coco_instances_results.json")
    ev = pycocotools_eval(gt_path, results_path)
    more = pycocotools_eval(gt_path, results_path, max_dets=[1, 10, 1000])
    assert res["AP"] == float(ev.stats[0] * 100)
    assert category_aps(ev)[DENSE_CATEGORY] < category_aps(more)[DENSE_CATEGORY]

    # Detectron2's keyword still applies: AP at the last maxDets, 1000
    res = run(COCOEvaluator("efl_coco_test_dense", max_dets_per_image=1000), pairs)["bbox"]
    p = more.eval["precision"][:, :, :, 0, -1]
    assert res["AP"] == pytest.approx(100 * p[p > -1].mean(), rel=1e-12)


def test_without_class_frequency_no_group_keys_and_no_report(tmp_path, register):
    gt_path = register("efl_coco_test_plain")  # a dataset registered by hand: no groups
    res = run(
        COCOEvaluator("efl_coco_test_plain", output_dir=str(tmp_path)),
        model_outputs(detections(coco_gt())),
    )["bbox"]
    assert set(res) == set(METRICS) | {f"AP-{n}" for n in CATEGORIES.values()}
    ev = pycocotools_eval(gt_path, str(tmp_path / "coco_instances_results.json"))
    assert res["AP"] == float(ev.stats[0] * 100)
    assert not list(tmp_path.glob("per_category_ap*"))


def test_no_detections_give_nan_groups(register):
    register("efl_coco_test_empty", **frequency_metadata(FREQUENCY["all_groups"]))
    empty = Instances((HEIGHT, WIDTH))
    empty.pred_boxes = Boxes(torch.zeros(0, 4))
    empty.scores = torch.zeros(0)
    empty.pred_classes = torch.zeros(0, dtype=torch.int64)
    res = run(COCOEvaluator("efl_coco_test_empty"), [({"image_id": 1}, {"instances": empty})])
    assert set(res["bbox"]) == set(METRICS) | {"APr", "APc", "APf"}
    assert all(math.isnan(v) for v in res["bbox"].values())


def test_class_frequency_that_does_not_fit_the_classes_is_refused(register):
    register("efl_coco_test_short", class_frequency=["f", "c"])
    with pytest.raises(ValueError, match="2 entries for 6 thing_classes"):
        COCOEvaluator("efl_coco_test_short")
    register("efl_coco_test_letter", class_frequency=["f", "c", "x", "r", "r", "c"])
    with pytest.raises(ValueError, match="'x'"):
        COCOEvaluator("efl_coco_test_letter")
