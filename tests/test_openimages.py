"""OpenImages Challenge 2019: the metric on hand-computed cases, the files (readers, hierarchy
expansion, registration), mini-OpenImages end to end (trains with EFL, evaluates), the CLI."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from _tiny_zoo import TINY_DATA_OVERRIDES, train_in_process

from efl_d2.data.openimages import (
    ClassHierarchy,
    check_openimages_files,
    expand_boxes,
    expand_labels,
    openimages_dataset_dicts,
    openimages_paths,
    read_boxes,
    read_image_labels,
)
from efl_d2.evaluation.openimages import (
    OpenImagesDetections,
    OpenImagesGroundTruth,
    expand_detections,
    group_aps,
    instance_count_groups,
    score_openimages,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANIMAL, DOG, CAT = 0, 1, 2
TREE = {
    "LabelName": "/m/0bl9f",
    "Subcategory": [
        {
            "LabelName": "/m/animal",
            "Subcategory": [{"LabelName": "/m/dog"}, {"LabelName": "/m/cat"}],
        }
    ],
}
MIDS = ["/m/animal", "/m/dog", "/m/cat"]


def yxyx(x0, x1, y0, y1):
    return [y0, x0, y1, x1]


def ground_truth(boxes, labels, image_ids=("a", "b")):
    """``boxes``: (image, class, [x0, x1, y0, y1], group_of); ``labels``: (image, class)."""
    return OpenImagesGroundTruth(
        num_classes=3,
        image_ids=list(image_ids),
        box_image=np.array([b[0] for b in boxes], dtype=np.int64),
        box_label=np.array([b[1] for b in boxes], dtype=np.int64),
        boxes=np.array([yxyx(*b[2]) for b in boxes], dtype=np.float64).reshape(-1, 4),
        box_group_of=np.array([b[3] for b in boxes], dtype=bool),
        label_image=np.array([lab[0] for lab in labels], dtype=np.int64),
        label_label=np.array([lab[1] for lab in labels], dtype=np.int64),
    )


def detections(rows):
    """``rows``: (image id, class, score, [x0, x1, y0, y1])."""
    return OpenImagesDetections(
        image_ids=[r[0] for r in rows],
        label=np.array([r[1] for r in rows], dtype=np.int64),
        score=np.array([r[2] for r in rows], dtype=np.float64),
        boxes=np.array([yxyx(*r[3]) for r in rows], dtype=np.float64).reshape(-1, 4),
    )


D1, D2 = (0.1, 0.4, 0.1, 0.5), (0.2, 0.6, 0.3, 0.8)
GROUP = (0.5, 0.95, 0.2, 0.9)
INSIDE = [(0.55, 0.7, 0.3, 0.5), (0.6, 0.9, 0.5, 0.8), (0.7, 0.85, 0.25, 0.45)]


def example():
    """Image a: a dog D1, a group-of box of cats; image b: a dog D2, cat verified absent. The
    ground truth is expanded by hand: every box is also an animal box (the group-of one too)."""
    gt = ground_truth(
        [
            (0, DOG, D1, False), (0, ANIMAL, D1, False),
            (0, CAT, GROUP, True), (0, ANIMAL, GROUP, True),
            (1, DOG, D2, False), (1, ANIMAL, D2, False),
        ],
        [(0, DOG), (0, CAT), (0, ANIMAL), (1, DOG), (1, CAT), (1, ANIMAL)],
    )  # fmt: skip
    dets = detections(
        [
            ("a", DOG, 0.95, D1), ("a", DOG, 0.50, D1),  # TP, then a duplicate: FP
            ("a", DOG, 0.99, (0.3, 0.3, 0.1, 0.5)),  # zero width: dropped, not an FP
            ("a", CAT, 0.90, INSIDE[0]), ("a", CAT, 0.60, INSIDE[1]), ("a", CAT, 0.30, INSIDE[2]),
            ("a", CAT, 0.40, (0.0, 0.1, 0.0, 0.1)),  # outside the group: FP
            ("a", ANIMAL, 0.80, D1), ("a", ANIMAL, 0.70, INSIDE[0]),
            ("b", DOG, 0.85, D2), ("b", CAT, 0.95, D2),  # cat verified absent in b: FP
            ("c", DOG, 0.9, D1),  # an image without ground truth: ignored
        ]
    )  # fmt: skip
    return gt, dets


def test_hand_computed_example():
    """Dog: 2 boxes, ranked TP, TP, FP -> AP 1. Cat: the group-of box counts once, as one TP at
    the best of its 3 detections (0.9); ranked FP (0.95 in b), TP, FP -> precision 1/2 at
    recall 1 -> AP 0.5. Animal: 3 boxes, 2 TP (one through the group box) -> AP 2/3."""
    gt, dets = example()
    result = score_openimages(gt, dets)
    np.testing.assert_allclose(result["AP"], [2 / 3, 1.0, 0.5], rtol=0, atol=1e-15)
    assert result["num_gt"].tolist() == [3, 2, 1]
    assert result["num_tp"].tolist() == [2, 2, 1]
    assert result["mAP"] == pytest.approx((2 / 3 + 1 + 0.5) / 3, abs=1e-15)


def test_group_of_many_detections_one_true_positive_rest_ignored():
    gt = ground_truth([(0, CAT, GROUP, True)], [(0, CAT)], image_ids=["a"])
    scores = [0.3, 0.7, 0.5]
    dets = detections([("a", CAT, s, box) for s, box in zip(scores, INSIDE)])
    result = score_openimages(gt, dets)
    assert result["AP"][CAT] == 1.0 and result["num_tp"][CAT] == 1
    # with a false positive scored 0.6 the group's TP must carry 0.7 (the best), not 0.3
    dets = detections(
        [("a", CAT, s, box) for s, box in zip(scores, INSIDE)] + [("a", CAT, 0.6, (0, 0.1, 0, 0.1))]
    )
    assert score_openimages(gt, dets)["AP"][CAT] == 1.0  # TP at 0.7 ranks above the FP
    dets = detections([("a", CAT, 0.3, INSIDE[0]), ("a", CAT, 0.6, (0, 0.1, 0, 0.1))])
    assert score_openimages(gt, dets)["AP"][CAT] == 0.5


def test_detections_of_unverified_classes_are_ignored():
    gt = ground_truth([(0, DOG, D1, False)], [(0, DOG)], image_ids=["a"])
    base = [("a", DOG, 0.9, D1)]
    noise = [("a", CAT, 0.99, D2), ("a", ANIMAL, 0.99, D2)]  # neither labelled nor boxed in a
    assert score_openimages(gt, detections(base + noise))["AP"][DOG] == 1.0
    assert math.isnan(score_openimages(gt, detections(base + noise))["AP"][CAT])
    # once cat is a verified (negative) label of the image, its detection is a false positive
    gt = ground_truth([(0, DOG, D1, False), (0, CAT, D1, False)], [(0, DOG)], image_ids=["a"])
    result = score_openimages(gt, detections(base + noise))
    assert result["AP"][CAT] == 0.0


def test_perfect_predictions_give_100_and_no_detections_0():
    gt, _ = example()
    perfect = detections(
        [("a", DOG, 0.9, D1), ("a", ANIMAL, 0.9, D1), ("a", CAT, 0.8, INSIDE[0]),
         ("a", ANIMAL, 0.8, INSIDE[0]), ("b", DOG, 0.7, D2), ("b", ANIMAL, 0.7, D2)]
    )  # fmt: skip
    assert score_openimages(gt, perfect)["mAP"] == 1.0
    assert score_openimages(gt, detections([]))["mAP"] == 0.0


def test_hierarchy_expansion_of_boxes_labels_and_detections():
    hierarchy = ClassHierarchy.from_tree(TREE)
    ancestors, descendants = hierarchy.index_lists(MIDS)
    assert ancestors == [[], [ANIMAL], [ANIMAL]] and descendants == [[DOG, CAT], [], []]
    from efl_d2.data.openimages import BoxTable, LabelTable

    boxes = BoxTable(
        ["a"], np.array([0, 0]), np.array([DOG, CAT]), np.arange(8.0).reshape(2, 4),
        np.array([False, True]),
    )  # fmt: skip
    out = expand_boxes(boxes, ancestors)
    assert out.label.tolist() == [DOG, ANIMAL, CAT, ANIMAL]
    assert out.group_of.tolist() == [False, False, True, True]  # the group-of flag is kept
    labels = LabelTable(["a"], np.array([0, 0]), np.array([DOG, ANIMAL]), np.array([True, False]))
    out = expand_labels(labels, ancestors, descendants)
    pairs = set(zip(out.label.tolist(), out.positive.tolist()))
    # a positive dog is a positive animal; a negative animal is a negative dog and cat
    assert pairs == {(DOG, True), (ANIMAL, True), (ANIMAL, False), (DOG, False), (CAT, False)}
    # a detector that outputs leaves only: expanded detections count for the parent
    gt, _ = example()
    leaves = detections([("a", DOG, 0.9, D1), ("b", DOG, 0.8, D2)])
    assert score_openimages(gt, leaves)["AP"][ANIMAL] == 0.0  # the metric does not expand
    expanded = expand_detections(leaves, ancestors)
    assert expanded.label.tolist() == [DOG, ANIMAL, DOG, ANIMAL]
    assert score_openimages(gt, expanded)["AP"][ANIMAL] == pytest.approx(2 / 3)


def test_ap1_to_ap5_groups_by_training_instances():
    counts = [50, 3, 1000, 7, 7, 200, 9, 1, 10000, 40]
    groups = instance_count_groups(counts)
    # sorted: 1(7), 3(1), 7(3), 7(4), 9(6), 40(9), 50(0), 200(5), 1000(2), 10000(8); ties by index
    assert groups.tolist() == [3, 0, 4, 1, 1, 3, 2, 0, 4, 2]
    ap = np.array([0.5, 0.1, 0.9, 0.2, np.nan, 0.4, 0.3, 0.0, 1.0, 0.6])
    np.testing.assert_allclose(group_aps(ap, groups), [0.05, 0.2, 0.45, 0.45, 0.95])  # NaN left out
    assert instance_count_groups(list(range(12))).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]


# --------------------------------------------------------------------------- files


@pytest.fixture
def mini_openimages(mini_openimages_root):
    return mini_openimages_root


def test_mini_openimages_files_have_the_release_formats(mini_openimages):
    paths = openimages_paths(mini_openimages, "train")
    with open(paths["boxes"]) as f:
        assert f.readline().strip().split(",") == [
            "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
            "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
        ]  # fmt: skip
    val = openimages_paths(mini_openimages, "val")
    with open(val["boxes"]) as f:
        assert f.readline().strip() == "ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf"
    with open(val["labels"]) as f:
        assert f.readline().strip() == "ImageID,LabelName,Confidence"
    with open(paths["classes"]) as f:
        assert f.readline().startswith("/m/mini_")  # no header
    from efl_d2.data.openimages import read_class_descriptions, read_hierarchy

    mids, _ = read_class_descriptions(paths["classes"])
    ancestors, _ = read_hierarchy(paths["hierarchy"]).index_lists(mids)
    assert max(len(a) for a in ancestors) == 2  # leaf -> shape -> family: three levels
    boxes = read_boxes(paths["boxes"], mids)
    labels = read_image_labels(paths["labels"], mids)
    assert boxes.group_of.any() and (~labels.positive).any()  # group-of boxes, verified negatives
    assert ((boxes.boxes >= 0) & (boxes.boxes <= 1)).all()


def test_registered_dataset_dicts_are_the_expanded_csv(mini_openimages):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from efl_d2.data.openimages import read_class_descriptions, read_hierarchy

    paths = openimages_paths(mini_openimages, "train")
    mids, names = read_class_descriptions(paths["classes"])
    dicts = DatasetCatalog.get("mini_openimages_train")
    assert MetadataCatalog.get("mini_openimages_train").thing_classes == names
    ancestors, _ = read_hierarchy(paths["hierarchy"]).index_lists(mids)
    expanded = expand_boxes(read_boxes(paths["boxes"], mids), ancestors)
    assert sum(len(d["annotations"]) for d in dicts) == len(expanded.label)
    flat = openimages_dataset_dicts(mini_openimages, "train", expand_hierarchy=False)
    assert sum(len(d["annotations"]) for d in flat) == len(read_boxes(paths["boxes"], mids).label)
    crowd = openimages_dataset_dicts(mini_openimages, "train", group_of="ignore")
    assert sum(a["iscrowd"] for d in crowd for a in d["annotations"]) == expanded.group_of.sum()
    # the configs' knobs reach the same data
    from efl_d2.data.openimages import openimages_images

    knob = openimages_images("mini_openimages_train", expand_hierarchy=False)
    assert sum(len(d["annotations"]) for d in knob) == len(read_boxes(paths["boxes"], mids).label)
    train = openimages_images("mini_openimages_train", filter_empty=True)
    assert 0 < len(train) <= len(dicts) and all(d["annotations"] for d in train)
    with pytest.raises(ValueError, match="not an OpenImages dataset"):
        openimages_images("mini_lvis_v1_train")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        check_openimages_files(openimages_paths(str(tmp_path), "val"))
    for name in ("challenge-2019-classes-description-500.csv", "label500-hierarchy.json",
                 "validation-detection-bbox.csv", "validation-detection-human-imagelabels.csv"):  # fmt: skip
        assert name in str(e.value)


@pytest.mark.slow
def test_mini_openimages_trains_with_efl_and_evaluates(mini_openimages, tmp_path):
    from detectron2.config import LazyConfig, instantiate
    from detectron2.evaluation import inference_on_dataset

    from efl_d2.engine import apply_overrides_strict
    from efl_d2.losses import EqualizedFocalLoss

    cfg = LazyConfig.load(os.path.join(REPO, "configs/mini_openimages/atss_efl_R18.py"))
    from efl_d2.data.openimages import read_class_descriptions

    num_classes = len(
        read_class_descriptions(openimages_paths(mini_openimages, "train")["classes"])[0]
    )
    apply_overrides_strict(
        cfg,
        [
            f"model.num_classes={num_classes}",
            "model.head.conv_dims=[64]",
            *TINY_DATA_OVERRIDES,
            f"+dataloader.evaluator.output_dir={tmp_path}",
        ],
    )

    def has_boxes(batch):
        assert all(len(b["instances"]) for b in batch)  # absolute boxes from relative ones

    model = train_in_process(cfg, 2, check_batch=has_boxes)
    assert isinstance(model.cls_loss, EqualizedFocalLoss)
    model.eval()
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )["bbox"]
    assert {"AP", "AP1", "AP2", "AP3", "AP4", "AP5"} <= set(results)
    assert 0 <= results["AP"] <= 100 and math.isfinite(results["AP"])
    assert os.path.getsize(tmp_path / "openimages_predictions.csv") > 0


def test_cli_scores_the_challenge_files(tmp_path):
    """tools/evaluate_openimages.py on the example above written as release files."""
    _, dets = example()
    (tmp_path / "classes.csv").write_text("/m/animal,Animal\n/m/dog,Dog\n/m/cat,Cat\n")
    import json

    (tmp_path / "hierarchy.json").write_text(json.dumps(TREE))
    # leaf-level files, as released: the tool expands them
    rows = ["ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf"]
    for img, cls, box, grp in [
        ("a", "/m/dog", D1, 0),
        ("a", "/m/cat", GROUP, 1),
        ("b", "/m/dog", D2, 0),
    ]:
        rows.append(f"{img},{cls}," + ",".join(map(str, box)) + f",{grp}")
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "labels.csv").write_text(
        "ImageID,LabelName,Confidence\na,/m/dog,1\na,/m/cat,1\nb,/m/dog,1\nb,/m/cat,0\n"
    )
    pred = ["ImageID,LabelName,Score,XMin,XMax,YMin,YMax"]
    for img, cls, score, (x0, x1, y0, y1) in zip(
        dets.image_ids, dets.label.tolist(), dets.score.tolist(),
        dets.boxes[:, [1, 3, 0, 2]].tolist(),
    ):  # fmt: skip
        pred.append(f"{img},{MIDS[cls]},{score},{x0},{x1},{y0},{y1}")
    (tmp_path / "pred.csv").write_text("\n".join(pred) + "\n")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools/evaluate_openimages.py"),
         "--boxes", str(tmp_path / "boxes.csv"), "--labels", str(tmp_path / "labels.csv"),
         "--predictions", str(tmp_path / "pred.csv"), "--classes", str(tmp_path / "classes.csv"),
         "--hierarchy", str(tmp_path / "hierarchy.json"), "--json", str(tmp_path / "out.json"),
         "--instance-counts-boxes", str(tmp_path / "boxes.csv")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["mAP"] == pytest.approx((2 / 3 + 1 + 0.5) / 3, abs=1e-12)
    assert out["AP"]["/m/cat"] == 0.5
    # groups by the expanded training boxes: cat 1 < dog 2 < animal 3 (5 groups of 3 classes:
    # one class each in AP1-AP3, AP4 and AP5 empty)
    assert [out[f"AP{k}"] for k in (1, 2, 3)] == [
        out["AP"][m] for m in ("/m/cat", "/m/dog", "/m/animal")
    ]
    assert out["AP4"] is None and out["AP5"] is None
    bad = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools/evaluate_openimages.py"),
         "--boxes", str(tmp_path / "missing.csv"), "--labels", str(tmp_path / "labels.csv"),
         "--predictions", str(tmp_path / "pred.csv"), "--classes", str(tmp_path / "classes.csv")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "missing.csv" in bad.stderr
