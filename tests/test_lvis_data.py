"""LVIS plumbing on mini-LVIS: detectron2's loader, repeat factors, LVISEvaluator, bad input."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from efl_d2.data import (
    RobustDatasetMapper,
    check_dataset_names,
    get_lvis_dataset_dicts,
    patch_lvis_for_numpy2,
)


def test_mini_lvis_registered_through_detectron2_lvis(mini_lvis_root):
    meta = MetadataCatalog.get("mini_lvis_v1_train")
    assert meta.evaluator_type == "lvis"
    assert meta.json_file.startswith(mini_lvis_root)
    with open(meta.json_file) as f:
        cats = json.load(f)["categories"]
    assert len(meta.thing_classes) == len(cats) == 10  # the json's classes, not LVIS's 1203
    assert meta.class_frequency == [c["frequency"] for c in sorted(cats, key=lambda c: c["id"])]
    dicts = DatasetCatalog.get("mini_lvis_v1_train")
    assert len(dicts) == 160
    assert all(0 <= a["category_id"] < 10 for d in dicts for a in d["annotations"])


def test_repeat_factors_favour_rare_images(mini_lvis_root):
    dicts = get_lvis_dataset_dicts("mini_lvis_v1_train")
    freq = MetadataCatalog.get("mini_lvis_v1_train").class_frequency
    t = 100 / len(dicts)  # LVIS's t=0.001 in image counts: classes in < 100 images get repeated
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, t)
    has = lambda d, g: any(freq[a["category_id"]] == g for a in d["annotations"])
    rare = factors[[has(d, "r") for d in dicts]]
    freq_only = factors[
        [all(freq[a["category_id"]] == "f" for a in d["annotations"]) for d in dicts]
    ]
    assert len(rare) > 0 and len(freq_only) > 0
    assert freq_only.max() == pytest.approx(1.0)
    assert rare.min() > 1.0
    # r(c) = sqrt(t / f(c)) for a class seen in n images: the largest factor is from the rarest class
    counts = np.bincount([a for d in dicts for a in {x["category_id"] for x in d["annotations"]}])
    expected_max = max(1.0, np.sqrt(t / (counts[counts > 0].min() / len(dicts))))
    assert float(factors.max()) == pytest.approx(expected_max, rel=1e-5)


def _gt_as_predictions(record):
    inst = Instances((record["height"], record["width"]))
    boxes = [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]
    ]
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.ones(len(boxes))
    inst.pred_classes = torch.tensor(
        [a["category_id"] for a in record["annotations"]], dtype=torch.int64
    )
    return inst


def _evaluate(records, make_instances):
    evaluator = LVISEvaluator("mini_lvis_v1_val", max_dets_per_image=300)
    evaluator.reset()
    for r in records:
        evaluator.process([{"image_id": r["image_id"]}], [{"instances": make_instances(r)}])
    return evaluator.evaluate()["bbox"]


def test_lvis_evaluator_ground_truth_scores_one_and_misses_score_zero(mini_lvis_root):
    assert patch_lvis_for_numpy2() is True
    assert not hasattr(np, "float")  # the shim does not touch numpy itself
    records = get_lvis_dataset_dicts("mini_lvis_v1_val", filter_empty=False)
    perfect = _evaluate(records, _gt_as_predictions)
    for k in ("AP", "APr", "APc", "APf"):
        assert perfect[k] == pytest.approx(100.0), k

    def misplaced(r):  # every GT box moved to a far corner and shrunk: no match at any IoU
        inst = _gt_as_predictions(r)
        inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(len(inst), 1))
        return inst

    missed = _evaluate(records, misplaced)
    for k in ("AP", "APr", "APc", "APf"):
        assert missed[k] == pytest.approx(0.0), k


def test_missing_dataset_files_name_the_path_and_env_var(tmp_path, mini_lvis_root):
    from efl_d2.data import register_mini_lvis

    register_mini_lvis(str(tmp_path / "nowhere"))
    try:
        with pytest.raises(FileNotFoundError) as e:
            get_lvis_dataset_dicts("mini_lvis_v1_train")
        msg = str(e.value)
        assert "nowhere/lvis/mini_lvis_v1_train.json" in msg and "DETECTRON2_DATASETS" in msg
    finally:
        register_mini_lvis(mini_lvis_root)
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS"):
        get_lvis_dataset_dicts("lvis_v1_val")  # builtin name, data not present on this machine


def test_dataset_name_string_instead_of_tuple_is_explained():
    with pytest.raises(TypeError, match=r"trailing comma"):
        check_dataset_names(list("mini_lvis_v1_val"))  # what ("mini_lvis_v1_val") iterates to
    with pytest.raises(KeyError, match="not registered"):
        check_dataset_names(("lvis_v1_vall",))
    assert check_dataset_names("mini_lvis_v1_val") == ["mini_lvis_v1_val"]


def test_corrupt_image_skipped_in_training_and_named_in_evaluation(tmp_path, caplog):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    record = {"file_name": str(bad), "height": 10, "width": 10, "image_id": 1, "annotations": []}
    train_mapper = RobustDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    with caplog.at_level("WARNING"):
        assert train_mapper(dict(record)) is None
    assert str(bad) in caplog.text
    test_mapper = RobustDatasetMapper(is_train=False, augmentations=[], image_format="BGR")
    with pytest.raises(RuntimeError, match="broken.jpg"):
        test_mapper(dict(record))


def test_rfs_train_loader_loads_the_dataset_once(mini_lvis_root, monkeypatch):
    from detectron2.config import LazyConfig, instantiate

    import efl_d2.data

    calls = []
    real = efl_d2.data.get_lvis_dataset_dicts
    monkeypatch.setattr(
        efl_d2.data, "get_lvis_dataset_dicts", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = LazyConfig.load(os.path.join(repo, "configs/common/data/mini_lvis.py"))
    cfg.dataloader.train.num_workers = 0
    loader = instantiate(cfg.dataloader.train)
    assert len(calls) == 1  # the repeat factors reuse the loader's dataset dicts
    assert next(iter(loader))  # and it yields batches
