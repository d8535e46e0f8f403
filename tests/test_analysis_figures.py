"""Paper Fig. 2 / Fig. 4 (efl_d2.analysis and its tools): plotted values vs numbers computed
independently here (through the detector's own training-step labelling, or by hand). Per-category
AP is tested with the evaluation (test_categories.py)."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from _tiny_zoo import one_torch_thread, randomize_, run_tool, write_tiny_config
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from PIL import Image

from efl_d2 import analysis, model_zoo


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_torch_thread():
        yield


def assert_png(path, min_side=200):
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= min_side
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5  # not a blank canvas


def non_empty_train_dicts(n=None):
    dicts = [d for d in DatasetCatalog.get("mini_lvis_v1_train") if d["annotations"]]
    return dicts if n is None else dicts[:n]


def training_step_labels(model, mapper, record):
    """Labels and logits exactly as a training step hands them to the classification loss."""
    calls = []
    inner = model.cls_loss

    class Recorder(torch.nn.Module):
        def forward(self, logits, gt_classes, normalizer):
            calls.append((logits.detach(), gt_classes.detach()))
            return inner(logits, gt_classes, normalizer)

    model.cls_loss = Recorder()
    model.train()
    try:
        with EventStorage(), torch.no_grad():
            model([mapper(record)])
    finally:
        model.cls_loss = inner
        model.eval()
    return calls[0]


# --------------------------------------------------------------------------- Fig. 2


def test_fig2_counts_hand_computed():
    """16 anchors of 32x32 on a 64x64 image; each GT box equals one anchor (IoU 1, neighbours
    IoU 1/3 < 0.5), so every GT gives exactly one positive."""
    gen = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[1.0], strides=[16], offset=0.5)
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)

    def ann(x, y, c):
        return {"bbox": [x, y, 32, 32], "bbox_mode": BoxMode.XYWH_ABS, "category_id": c}

    dicts = [
        {"height": 64, "width": 64, "annotations": [ann(-8, -8, 0)]},
        {"height": 64, "width": 64, "annotations": [ann(24, 24, 1), ann(-8, 24, 0)]},
        {"height": 64, "width": 64, "annotations": []},
    ]
    data = analysis.count_positive_negative_samples(dicts, gen, matcher, 3, size_divisibility=1)
    assert data.positives.tolist() == [2, 1, 0]
    assert data.negatives.tolist() == [48 - 2, 48 - 1, 48]
    assert data.image_counts.tolist() == [2, 1, 0] and data.order.tolist() == [0, 1, 2]
    np.testing.assert_allclose(data.log_ratio[:2], np.log10([2 / 46, 1 / 47]))
    assert data.log_ratio[2] == -np.inf


def test_fig2_tool_matches_the_detectors_own_assignment(mini_lvis_root, tmp_path):
    n = 12
    config = write_tiny_config(tmp_path)
    png, js = str(tmp_path / "fig2.png"), str(tmp_path / "fig2.json")
    data, drawn = run_tool("plot_fig2_pos_neg_ratio").main(
        ["--config-file", config, "--max-images", str(n), "--output", png, "--json", js]
    )
    assert_png(png)

    # Independent: the real data path (mapper, backbone, anchors from the features, the ATSS
    # label_anchors of a training step) on the same images.
    cfg = model_zoo.get_config(config)
    model = instantiate(cfg.model).eval()
    mapper = analysis.scoring_mapper_from_config(cfg)
    c = cfg.model.num_classes
    pos, neg = np.zeros(c, np.int64), np.zeros(c, np.int64)
    for record in non_empty_train_dicts(n):
        _, labels = training_step_labels(model, mapper, record)
        counts = np.bincount(labels[labels < c].numpy(), minlength=c)
        pos += counts
        neg += len(labels) - counts
    assert pos.sum() > 0
    np.testing.assert_array_equal(data.positives, pos)
    np.testing.assert_array_equal(data.negatives, neg)

    image_counts = Counter()
    for record in non_empty_train_dicts(n):
        image_counts.update({a["category_id"] for a in record["annotations"]})
    order = sorted(range(c), key=lambda k: (-image_counts[k], k))
    expected = [(rank, np.log10(pos[k] / neg[k])) for rank, k in enumerate(order) if pos[k] > 0]
    np.testing.assert_array_equal(drawn["x"], [r for r, _ in expected])
    np.testing.assert_allclose(drawn["y"], [v for _, v in expected], rtol=1e-12)
    with open(js) as f:
        rows = json.load(f)["categories"]
    assert [r["category_id"] for r in rows] == order
    assert [r["positives"] for r in rows] == [int(pos[k]) for k in order]
    freq = MetadataCatalog.get("mini_lvis_v1_train").class_frequency
    assert [r["frequency"] for r in rows] == [freq[k] for k in order]


# --------------------------------------------------------------------------- Fig. 4


def test_fig4_tool_side_by_side(mini_lvis_root, tmp_path):
    n = 4
    config = write_tiny_config(tmp_path)
    cfg = model_zoo.get_config(config)
    models, paths = {}, []
    for label, seed in (("focal", 11), ("EFL", 12)):
        model = randomize_(instantiate(cfg.model), seed=seed).eval()
        (tmp_path / label).mkdir()
        DetectionCheckpointer(model, str(tmp_path / label)).save("model_final")
        models[label] = model
        paths.append(str(tmp_path / label / "model_final.pth"))
    png, js = str(tmp_path / "fig4.png"), str(tmp_path / "fig4.json")
    panels, order, drawn = run_tool("plot_fig4_scores").main(
        [
            "--panel",
            "focal",
            config,
            paths[0],
            "--panel",
            "EFL",
            config,
            paths[1],
            "--max-images",
            str(n),
            "--output",
            png,
            "--json",
            js,
            "--device",
            "cpu",
        ]
    )
    assert_png(png)

    c = cfg.model.num_classes
    image_counts = Counter()
    for record in non_empty_train_dicts():
        image_counts.update({a["category_id"] for a in record["annotations"]})
    expected_order = sorted(range(c), key=lambda k: (-image_counts[k], k))
    assert list(order) == expected_order

    mapper = analysis.scoring_mapper_from_config(cfg)
    val = DatasetCatalog.get("mini_lvis_v1_val")[:n]
    for label, model in models.items():
        pos_sum, pos_n = np.zeros(c), np.zeros(c)
        all_sum, all_n = np.zeros(c), 0
        for record in val:
            logits, labels = training_step_labels(model, mapper, record)
            p = logits.double().sigmoid().numpy()
            lab = labels.numpy()
            all_sum += p.sum(0)
            all_n += len(lab)
            for k in range(c):
                pos_sum[k] += p[lab == k, k].sum()
                pos_n[k] += (lab == k).sum()
        with np.errstate(invalid="ignore"):
            pos_mean = pos_sum / pos_n
        neg_mean = (all_sum - pos_sum) / (all_n - pos_n)
        assert (pos_n > 0).sum() >= 2
        x, y = drawn[label]["positive"]
        np.testing.assert_array_equal(x, np.arange(c))
        np.testing.assert_allclose(y, pos_mean[expected_order], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(drawn[label]["negative"][1], neg_mean[expected_order], rtol=1e-6)
        np.testing.assert_array_equal(panels[label].pos_count, pos_n)
    # different checkpoints, different curves
    assert not np.allclose(drawn["focal"]["negative"][1], drawn["EFL"]["negative"][1])
    with open(js) as f:
        saved = json.load(f)
    assert set(saved["panels"]) == {"focal", "EFL"} and saved["order"] == expected_order


def test_class_count_mismatch_is_a_clear_error(mini_lvis_root, tmp_path):
    config = write_tiny_config(tmp_path, "five.py", num_classes=5)
    with pytest.raises(ValueError, match="num_classes=5 but dataset 'mini_lvis_v1_train' has 10"):
        analysis.fig2_data_from_config(model_zoo.get_config(config), max_images=2)
