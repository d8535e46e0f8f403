"""efl_d2.evaluation: the sharded LVIS scoring equals lvis-api exactly; AP-fixed / AP-pool; the
Detectron2 evaluator built on it."""

import json
import math

import numpy as np
import pytest
import torch
from _lvis_cases import heavy_imports, lvis_api_eval, make_case
from detectron2.data import MetadataCatalog
from detectron2.evaluation import LVISEvaluator as D2LVISEvaluator
from detectron2.structures import Boxes, Instances

from efl_d2.evaluation import LVISEvaluator, evaluate_lvis, lvis_arrays, score_lvis

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def assert_same_as_lvis_api(ev, scores):
    """Bitwise-equal curves and equal summaries (every metric lvis-api computes, ARs too)."""
    assert np.array_equal(ev.eval["precision"], scores.precision)
    assert np.array_equal(ev.eval["recall"], scores.recall)
    assert dict(ev.results) == dict(scores.results)


# ----------------------------------------------------------------------------- vs lvis-api


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_dets", [300, 12])
def test_standard_protocol_equals_lvis_api(seed, max_dets):
    gt, results = make_case(seed)
    ev = lvis_api_eval(gt, results, max_dets=max_dets)
    assert 0.05 < ev.results["AP"] < 0.95  # a case that discriminates
    assert_same_as_lvis_api(ev, score_lvis(lvis_arrays(gt, results, max_dets_per_image=max_dets)))


@pytest.mark.parametrize("seed", range(3))
def test_dense_groups_equal_lvis_api(seed):
    """Many GT and detections of one category per image: long greedy-matching sequences."""
    gt, results = make_case(100 + seed, n_img=12, n_cat=4, max_gt=25, dets_per_img=150)
    ev = lvis_api_eval(gt, results)
    assert_same_as_lvis_api(ev, score_lvis(lvis_arrays(gt, results)))


def test_subset_of_images_restricts_the_ground_truth():
    gt, results = make_case(3)
    subset = [5, 25, 45, 65, 105, 205]
    ev = lvis_api_eval(gt, results, image_ids=subset)
    assert_same_as_lvis_api(ev, score_lvis(lvis_arrays(gt, results, image_ids=subset)))
    whole = evaluate_lvis(gt, results)
    assert evaluate_lvis(gt, results, image_ids=subset)["AP"] != whole["AP"]


def test_shards_and_workers_do_not_change_any_number():
    gt, results = make_case(4, n_img=60, n_cat=20)
    arrays = lvis_arrays(gt, results)
    one = score_lvis(arrays, num_shards=1)
    for shards in (3, 7, 20):
        many = score_lvis(arrays, num_shards=shards)
        assert np.array_equal(one.precision, many.precision) and one.results == many.results
    two_workers = score_lvis(arrays, num_workers=2)
    assert np.array_equal(one.precision, two_workers.precision)
    assert one.results == two_workers.results
    pooled = score_lvis(lvis_arrays(gt, results, protocol="pooled"), protocol="pooled")
    pooled_3 = score_lvis(
        lvis_arrays(gt, results, protocol="pooled"), protocol="pooled", num_shards=3
    )
    assert np.array_equal(pooled.precision, pooled_3.precision)


# ----------------------------------------------------------------------------- hand-made cases

CATS = [
    {"id": 1, "name": "a", "frequency": "r"},
    {"id": 2, "name": "b", "frequency": "f"},
]


def image(i, neg=(), not_exhaustive=()):
    return {
        "id": i,
        "width": 200,
        "height": 200,
        "neg_category_ids": list(neg),
        "not_exhaustive_category_ids": list(not_exhaustive),
    }


def ann(i, img, cat, box):
    return {"id": i, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3]}


def det(img, cat, box, score):
    return {"image_id": img, "category_id": cat, "bbox": box, "score": score}


BOX_A, BOX_B = [10.0, 10.0, 50.0, 40.0], [100.0, 80.0, 60.0, 60.0]
GT = {
    "images": [image(1, neg=[2]), image(2), image(3, not_exhaustive=[1])],
    "annotations": [ann(1, 1, 1, BOX_A), ann(2, 2, 2, BOX_B), ann(3, 3, 1, BOX_A)],
    "categories": CATS,
}


def test_perfect_predictions_give_100_and_wrong_boxes_0():
    perfect = [det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in GT["annotations"]]
    m = evaluate_lvis(GT, perfect)
    assert all(m[k] == pytest.approx(100.0) for k in ("AP", "AP50", "AP75", "APr", "APf"))
    assert m["APc"] == -100.0  # no common category: undefined, as lvis-api (-1) and detectron2
    far = [
        det(a["image_id"], a["category_id"], [150.0, 0.0, 10.0, 10.0], 0.9)
        for a in GT["annotations"]
    ]
    assert evaluate_lvis(GT, far)["AP"] == 0.0


def test_federated_negatives_and_not_exhaustive_categories():
    """AP of "b" (one GT, in image 2) with a higher-scoring false positive elsewhere: it counts in
    image 1 (b verified absent) and is ignored in image 3 (b never verified)."""
    tp_b = det(2, 2, BOX_B, 0.5)
    base = [det(1, 1, BOX_A, 0.9), det(3, 1, BOX_A, 0.9), tp_b]
    assert evaluate_lvis(GT, base)["AP"] == pytest.approx(100.0)
    # image 1 has b as a negative: the FP ranks first, precision 1/2 at recall 1 -> AP_b = 0.5
    m = evaluate_lvis(GT, [*base, det(1, 2, BOX_B, 0.8)])
    assert m["APf"] == pytest.approx(50.0, abs=1e-9) and m["APr"] == pytest.approx(100.0)
    # image 3 says nothing about b: the same FP is not counted
    assert evaluate_lvis(GT, [*base, det(3, 2, BOX_B, 0.8)])["APf"] == pytest.approx(100.0)
    # "a" is not exhaustive in image 3: an unmatched a there is ignored; in image 1 it is an FP
    assert evaluate_lvis(GT, [*base, det(3, 1, BOX_B, 0.95)])["APr"] == pytest.approx(100.0)
    assert evaluate_lvis(GT, [*base, det(1, 1, BOX_B, 0.95)])["APr"] < 100.0


def test_ap_fixed_keeps_the_top_k_per_category_over_the_dataset():
    """K = 2: for "a" the two best detections are both TPs (AP 1) only if the third, a
    higher-scoring FP of image 1, is cut by K; per image nothing is cut (no 300 limit)."""
    dets = [
        det(1, 1, BOX_A, 0.9),
        det(3, 1, BOX_A, 0.8),
        det(1, 1, BOX_B, 0.7),
        det(2, 2, BOX_B, 0.6),
    ]
    fixed = evaluate_lvis(GT, dets, protocol="fixed", dets_per_category=2)
    assert fixed["APr"] == pytest.approx(100.0)
    # FP ranked first: now within the top 2 -> TP, FP in the top 2 of "a": AP_a = 1/2... by hand:
    # scores 0.95 FP, 0.9 TP (+ 0.8 TP cut): recall 1/2 at precision 1/2 -> AP over 101 recall
    # points = 0.5 * 51/101
    dets[2]["score"] = 0.95
    fixed = evaluate_lvis(GT, dets, protocol="fixed", dets_per_category=2)
    assert fixed["APr"] == pytest.approx(100 * 0.5 * 51 / 101, abs=1e-9)
    # the standard protocol keeps all three: 0.95 FP, 0.9 TP, 0.8 TP -> precision 2/3 at recall 1
    assert evaluate_lvis(GT, dets)["APr"] == pytest.approx(100 * 2 / 3, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_ap_fixed_equals_lvis_api_on_the_top_k(seed):
    gt, results = make_case(seed, dets_per_img=60)
    ev = lvis_api_eval(gt, results, top_k_per_cat=25)
    scores = score_lvis(
        lvis_arrays(gt, results, protocol="fixed", dets_per_category=25), protocol="fixed"
    )
    assert_same_as_lvis_api(ev, scores)


def test_ap_pool_by_hand():
    """One curve over all detections of a group. Scores: 0.95 FP (b in image 1, a negative),
    0.9 TP (a), 0.8 TP (b): precision 2/3 at recall 1 -> AP-pool = 2/3, while the per-category
    mean is (1 + 1/2) / 2."""
    dets = [det(1, 2, BOX_B, 0.95), det(1, 1, BOX_A, 0.9), det(2, 2, BOX_B, 0.8)]
    gt = {**GT, "annotations": GT["annotations"][:2]}
    pooled = evaluate_lvis(gt, dets, protocol="pooled")
    eps = np.spacing(1)
    assert pooled["AP-pool"] == pytest.approx(100 * 2 / (3 + eps), rel=1e-12)
    assert pooled["AP-pool-r"] == pytest.approx(100.0)
    assert pooled["AP-pool-f"] == pytest.approx(100 * 1 / (2 + eps), rel=1e-12)
    assert pooled["AP-pool-c"] == -100.0  # empty pool
    assert evaluate_lvis(gt, dets, protocol="fixed")["AP"] == pytest.approx(75.0)


# ----------------------------------------------------------------------------- the evaluator


def register_gt(tmp_path, gt, name):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(gt))
    MetadataCatalog.get(name).set(
        json_file=str(path),
        thing_classes=[c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])],
        thing_dataset_id_to_contiguous_id={
            c["id"]: k for k, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))
        },
    )
    return path


def model_outputs(gt, results):
    """(inputs, outputs) per image as a detector gives them to an evaluator."""
    cat_to_contiguous = {
        c["id"]: k for k, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))
    }
    per_image = {im["id"]: [] for im in gt["images"]}
    for r in results:
        per_image[r["image_id"]].append(r)
    pairs = []
    for img_id, rs in per_image.items():
        inst = Instances((480, 640))
        xywh = torch.tensor([r["bbox"] for r in rs], dtype=torch.float32).reshape(-1, 4)
        inst.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))
        inst.scores = torch.tensor([r["score"] for r in rs], dtype=torch.float32)
        inst.pred_classes = torch.tensor(
            [cat_to_contiguous[r["category_id"]] for r in rs], dtype=torch.int64
        )
        pairs.append(({"image_id": img_id}, {"instances": inst}))
    return pairs


def run_evaluator(evaluator, pairs):
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    return evaluator.evaluate()


def test_evaluator_equals_detectron2s_and_restricts_a_subset(tmp_path):
    gt, results = make_case(5)
    register_gt(tmp_path, gt, "efl_eval_test_case5")
    pairs = model_outputs(gt, results)
    ours = run_evaluator(
        LVISEvaluator("efl_eval_test_case5", num_workers=0, output_dir=str(tmp_path)), pairs
    )
    d2 = run_evaluator(D2LVISEvaluator("efl_eval_test_case5"), pairs)
    assert set(ours["bbox"]) == set(METRICS)
    assert ours["bbox"] == d2["bbox"]
    saved = json.loads((tmp_path / "lvis_instances_results.json").read_text())
    assert len(saved) == len(results)

    # a quarter of the images: the others' GT must not count as missed
    subset = pairs[::4]
    ours = run_evaluator(LVISEvaluator("efl_eval_test_case5"), subset)
    ids = sorted(inp["image_id"] for inp, _ in subset)
    ev = lvis_api_eval(gt, saved, image_ids=ids)
    assert ours["bbox"] == {m: float(ev.results[m] * 100) for m in METRICS}
    assert (
        ours["bbox"]["AP"]
        > run_evaluator(D2LVISEvaluator("efl_eval_test_case5"), subset)["bbox"]["AP"]
    )


def test_fixed_protocol_evaluator_streams_the_top_k(tmp_path):
    """Detections arrive image by image and are pruned to K per category on the way; the result
    equals AP-fixed on the whole list."""
    gt, results = make_case(6, dets_per_img=60)
    register_gt(tmp_path, gt, "efl_eval_test_case6")
    pairs = model_outputs(gt, results)
    evaluator = LVISEvaluator("efl_eval_test_case6", protocol="fixed", dets_per_category=7)
    got = run_evaluator(evaluator, pairs)["bbox-fixed"]
    assert evaluator._top_k.size <= 2 * 7 * len(gt["categories"]) + 60
    # the reference gets float32-rounded boxes and scores, as the evaluator does
    rounded = [
        {
            **r,
            "bbox": [float(np.float32(v)) for v in r["bbox"]],
            "score": float(np.float32(r["score"])),
        }
        for r in results
    ]
    want = evaluate_lvis(gt, rounded, protocol="fixed", dets_per_category=7)
    assert got == want
    assert not math.isnan(got["AP"])


def test_mini_lvis_predictions_score_as_detectron2s_evaluator(mini_lvis_root):
    """mini-LVIS val's own federated annotations; predictions: its GT boxes jittered, some with
    the wrong class, plus random boxes, random scores."""
    from efl_d2.data import get_lvis_dataset_dicts

    rng = np.random.default_rng(0)
    pairs = []
    for r in get_lvis_dataset_dicts("mini_lvis_v1_val", filter_empty=False):
        boxes = [a["bbox"] for a in r["annotations"]]  # XYWH_ABS in detectron2's LVIS dicts
        classes = [a["category_id"] for a in r["annotations"]]
        boxes += [[*rng.uniform(0, 60, 2), *rng.uniform(4, 40, 2)] for _ in range(5)]
        classes += rng.integers(0, 10, 5).tolist()
        xywh = torch.tensor(boxes, dtype=torch.float64)
        xywh[: len(r["annotations"])] += torch.from_numpy(
            rng.normal(0, 2, (len(r["annotations"]), 4))
        )
        classes = [c if rng.random() > 0.2 else int(rng.integers(0, 10)) for c in classes]
        inst = Instances((r["height"], r["width"]))
        inst.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).float())
        inst.scores = torch.from_numpy(rng.random(len(classes))).float()
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        pairs.append(({"image_id": r["image_id"]}, {"instances": inst}))
    ours = run_evaluator(LVISEvaluator("mini_lvis_v1_val"), pairs)["bbox"]
    assert 5 < ours["AP"] < 95
    assert ours == run_evaluator(D2LVISEvaluator("mini_lvis_v1_val"), pairs)["bbox"]


# ----------------------------------------------------------------------------- AP-fixed inference


def test_per_class_candidates_keep_the_best_anchors_of_every_class():
    from efl_d2.modeling.candidates import select_candidates

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 6, generator=g)
    scores[:, 0] += 1.0  # class 0 dominates: the global rule keeps (nearly) only it
    s, a, c = select_candidates(scores, score_thresh=0.05, topk_candidates=10, topk_per_class=0)
    assert set(c.tolist()) == {0} and len(s) == 10
    assert torch.equal(s, scores.flatten().topk(10).values)
    s, a, c = select_candidates(scores, score_thresh=0.05, topk_candidates=10, topk_per_class=3)
    for k in range(6):
        want = scores[:, k].topk(3)
        want_keep = want.values > 0.05
        assert torch.equal(s[c == k], want.values[want_keep])
        assert torch.equal(a[c == k], want.indices[want_keep])
    assert torch.equal(scores[a, c], s)


@pytest.mark.slow
def test_train_net_eval_protocol_switch(tmp_path, env_with_datasets):
    """``--eval-protocol`` switches the evaluator and the detector's candidates; the run reports
    the protocol's metrics. A protocol set on the evaluator alone is refused before any work."""
    from _tiny_zoo import TINY_TRAIN_OVERRIDES, run_train_net

    protocol = "fixed"
    config = "mini_lvis/atss_efl_R18.py"
    args = ["--config-file", config, "--eval-only", "--allow-random-weights", *TINY_TRAIN_OVERRIDES]
    proc = run_train_net(
        [*args, "--eval-protocol", protocol, f"train.output_dir={tmp_path}"], env_with_datasets
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f"protocol '{protocol}'" in log and "top 10000 per category" in log
    assert "bbox-fixed" in log and "efl_d2 summary" in log

    proc = run_train_net(
        [*args, f"dataloader.evaluator.protocol={protocol}", f"train.output_dir={tmp_path}"],
        env_with_datasets,
    )
    assert proc.returncode == 2 and "--eval-protocol" in proc.stdout + proc.stderr


def test_scoring_processes_import_neither_torch_nor_detectron2():
    """What a scoring worker imports (efl_d2 with EFL_D2_NUMPY_ONLY=1): numpy and lvis-api."""
    statement = "import efl_d2.evaluation.lvis_scoring as s; s.lvis_params()"
    assert heavy_imports(statement, modules=("torch", "detectron2")) == []


def test_evaluator_writes_the_per_category_report_and_group_histograms(tmp_path):
    from detectron2.utils.events import EventStorage

    from efl_d2.categories import per_group_summary
    from efl_d2.evaluation import read_per_category_report

    gt, results = make_case(7)
    register_gt(tmp_path, gt, "efl_eval_test_case7")
    evaluator = LVISEvaluator("efl_eval_test_case7", output_dir=str(tmp_path))
    with EventStorage() as storage:
        metrics = run_evaluator(evaluator, model_outputs(gt, results))["bbox"]
    rows = read_per_category_report(str(tmp_path / "per_category_ap_bbox.csv"))
    assert [r["category_id"] for r in rows] == sorted(c["id"] for c in gt["categories"])
    groups = per_group_summary(rows)
    for g in "rcf":  # the group means of the report are lvis-api's APr / APc / APf
        assert 100 * groups[g]["ap"] == pytest.approx(metrics[f"AP{g}"], rel=1e-12)
    counts = {}
    for a in gt["annotations"]:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    assert {r["category_id"]: r["val_instance_count"] for r in rows} == {
        c["id"]: counts.get(c["id"], 0) for c in gt["categories"]
    }
    hists = {h["tag"]: h for h in storage._histograms}
    assert set(hists) == {f"bbox/per_category_AP_{g}" for g in "rcf"}
    n_r = sum(1 for r in rows if r["frequency"] == "r" and not math.isnan(r["ap"]))
    assert hists["bbox/per_category_AP_r"]["num"] == n_r


def test_results_json_read_as_arrays_scores_the_same(tmp_path):
    from efl_d2.data.datasets import DatasetFileError
    from efl_d2.evaluation.lvis_inputs import read_lvis_results

    gt, results = make_case(8)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    arrays = read_lvis_results(str(path))
    assert arrays["bbox"].shape == (len(results), 4)
    assert arrays["score"].tolist() == [r["score"] for r in results]
    assert evaluate_lvis(gt, str(path)) == evaluate_lvis(gt, results)
    for bad, message in (
        ('{"a": 1}', "expected a list"),
        ('[{"image_id": 5}]', "result 0 is not a detection"),
        ('[{"image_id": 5, "category_id": 1, "score": 0.5, "bbox": [1, 2]}]', "4 numbers"),
        ('[{"image_id": 5, "score": 0.5, "bbox": [1, 2, 3, 4]}]', "lacks a field"),
        ('[{"image_id": 5,', "line 1, column"),
    ):
        path.write_text(bad)
        with pytest.raises(DatasetFileError, match=message):
            read_lvis_results(str(path))
