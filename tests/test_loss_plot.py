"""tools/plot_efl_stats.py on a checkpoint written by DetectionCheckpointer."""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from efl_d2.losses import EqualizedFocalLoss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = 6


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "plot_efl_stats", os.path.join(ROOT, "tools", "plot_efl_stats.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Module()
        self.head.cls_loss = EqualizedFocalLoss(C)
        self.linear = nn.Linear(2, 2)


@pytest.fixture
def checkpoint(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    model = _Model()
    loss = model.head.cls_loss
    loss.pos_grad.copy_(torch.tensor([5.0, 0.1, 2.0, 0.0, 9.0, 1.0]))
    loss.neg_grad.copy_(torch.tensor([6.0, 10.0, 4.0, 3.0, 9.5, 20.0]))
    loss.pos_neg.copy_((loss.pos_grad / (loss.neg_grad + 1e-10)).clamp(0, 1))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    return str(tmp_path / "model_final.pth"), loss


def test_plot_from_checkpoint_and_lvis_json(tmp_path, checkpoint):
    path, loss = checkpoint
    # Category ids deliberately unsorted in the json: class index = rank of the sorted id.
    ids = [30, 10, 20, 60, 50, 40]
    counts = {10: 7, 20: 1, 30: 12, 40: 0, 50: 3, 60: 25}
    freq = {10: "c", 20: "r", 30: "f", 40: "r", 50: "r", 60: "f"}
    anns, k = [], 0
    for cid, n in counts.items():
        for _ in range(n):
            anns.append({"id": k, "image_id": 1, "category_id": cid, "bbox": [0, 0, 1, 1]})
            k += 1
    lvis = {
        "images": [{"id": 1}],
        "annotations": anns,
        "categories": [{"id": i, "name": f"c{i}", "frequency": freq[i]} for i in ids],
    }
    json_path = tmp_path / "train.json"
    json_path.write_text(json.dumps(lvis))
    out = tmp_path / "stats.png"

    tool = _load_tool()
    panels = tool.main([path, "--json", str(json_path), "--output", str(out), "--scale", "8"])

    assert list(panels) == ["head.cls_loss"]
    data = panels["head.cls_loss"]
    # Sorted ids 10..60 -> class 0..5 with counts [7, 1, 12, 0, 3, 25]: most frequent first.
    expected_order = np.array([5, 2, 0, 4, 1, 3])
    g = loss.pos_neg.double().numpy()
    np.testing.assert_array_equal(data["order"], expected_order)
    np.testing.assert_allclose(data["g"], g[expected_order])
    np.testing.assert_allclose(data["gamma"], 2.0 + 8.0 * (1.0 - g[expected_order]))
    np.testing.assert_array_equal(data["key"], [25, 12, 7, 3, 1, 0])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_plot_without_json_orders_by_positive_gradient(tmp_path, checkpoint):
    path, loss = checkpoint
    tool = _load_tool()
    out = tmp_path / "p.png"
    panels = tool.main([path, "--output", str(out)])
    data = panels["head.cls_loss"]
    np.testing.assert_array_equal(data["order"], [4, 0, 2, 5, 1, 3])  # pos_grad descending
    np.testing.assert_allclose(data["g"], loss.pos_neg.double().numpy()[[4, 0, 2, 5, 1, 3]])
    assert out.exists()


def test_plot_errors_are_explained(tmp_path):
    tool = _load_tool()
    bare = tmp_path / "bare.pth"
    torch.save({"model": {"linear.weight": torch.zeros(2, 2)}}, bare)
    with pytest.raises(SystemExit, match="no EFL statistics"):
        tool.main([str(bare)])
