"""projects/inspect_predictions.ipynb runs headless, top to bottom, on a tiny checkpoint."""

import json
import math
import os

import nbformat
import numpy as np
import pytest
import torch
from _tiny_zoo import one_torch_thread, randomize_, single_thread_env, write_tiny_config
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from nbclient import NotebookClient

from efl_d2 import model_zoo

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
NOTEBOOK = os.path.join(REPO, "projects", "inspect_predictions.ipynb")
PARAMETERS = (
    "CONFIG",
    "CHECKPOINT",
    "IMAGE_DIR",
    "NUM_IMAGES",
    "MAX_EVAL_IMAGES",
    "DATASETS_ROOT",
    "VIS_THRESH",
    "DEVICE",
    "SUMMARY_JSON",
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_torch_thread():
        yield


@pytest.mark.slow
def test_notebook_executes_and_reports_the_checkpoint(tmp_path, mini_lvis_root):
    config = write_tiny_config(tmp_path)
    model = randomize_(model_zoo.get(config, device="cpu"), seed=31)
    g = torch.linspace(0.05, 1.0, 10)
    model.cls_loss.pos_neg.copy_(g)
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    param_cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(param_cells) == 1 and nb.cells.index(param_cells[0]) <= 1
    for name in PARAMETERS:  # the notebook still takes every parameter the test sets
        assert f"\n{name} = " in "\n" + param_cells[0].source, name
    summary_path = tmp_path / "summary.json"
    values = {
        "CONFIG": config,
        "CHECKPOINT": str(tmp_path / "model_final.pth"),
        "IMAGE_DIR": None,
        "NUM_IMAGES": 2,
        "MAX_EVAL_IMAGES": 8,
        "DATASETS_ROOT": mini_lvis_root,
        "VIS_THRESH": None,  # the library's rule
        "DEVICE": "cpu",
        "SUMMARY_JSON": str(summary_path),
    }
    param_cells[0].source = "\n".join(f"{k} = {v!r}" for k, v in values.items())

    # Run from projects/, as a user opening the notebook would (paths resolve to the repo root).
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.join(REPO, "projects")}},
    )
    client.execute(env=single_thread_env())  # raises CellExecutionError on any failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) >= 3  # predictions, per-category AP, EFL statistics
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "APr" in text and "mean gamma" in text

    with open(summary_path) as f:
        summary = json.load(f)
    assert set(summary["lvis"]) == {"AP", "AP50", "AP75", "APr", "APc", "APf"}
    assert all(math.isfinite(v) for v in summary["lvis"].values())
    meta = MetadataCatalog.get("mini_lvis_v1_val")
    counts = [c["image_count"] for c in meta.class_image_count]
    order = sorted(range(10), key=lambda k: (-counts[k], k))
    assert summary["per_category"]["category_id"] == [k + 1 for k in order]
    assert summary["per_category"]["frequency"] == [meta.class_frequency[k] for k in order]
    efl = summary["efl"]["cls_loss"]
    np.testing.assert_allclose(efl["g"], g.numpy(), rtol=1e-6)
    np.testing.assert_allclose(efl["gamma"], 2.0 + 8.0 * (1.0 - g.numpy()), rtol=1e-6)
