"""Broken annotation files: `import efl_d2` still works, the error names the file, --force repairs."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from detectron2.data import MetadataCatalog

from efl_d2.data import DatasetFileError, get_lvis_dataset_dicts, register_mini_lvis

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def broken_root(tmp_path, mini_lvis_root):
    """A copy of the session's mini-LVIS whose names point at it while the test runs."""
    root = tmp_path / "datasets"
    shutil.copytree(mini_lvis_root, root)
    register_mini_lvis(str(root))
    yield root
    register_mini_lvis(mini_lvis_root)


@pytest.mark.slow
def test_corrupt_json_is_named_when_used_and_repaired_by_force(broken_root):
    train_json = broken_root / "lvis" / "mini_lvis_v1_train.json"
    text = train_json.read_text()
    train_json.write_text(text[:200])  # cut short, as by a full disk
    env = dict(os.environ, DETECTRON2_DATASETS=str(broken_root), PYTHONWARNINGS="ignore")

    # registration reads nothing: importing the package is unaffected
    proc = subprocess.run(
        [sys.executable, "-c", "import efl_d2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]

    register_mini_lvis(str(broken_root))
    with pytest.raises(DatasetFileError) as e:
        get_lvis_dataset_dicts("mini_lvis_v1_train")
    msg = str(e.value)
    assert str(train_json) in msg and "not valid JSON at line 1, column" in msg
    assert "python -m efl_d2.data.mini_lvis" in msg and "--force" in msg
    with pytest.raises(DatasetFileError, match="mini_lvis_v1_train.json: not valid JSON"):
        MetadataCatalog.get("mini_lvis_v1_train").thing_classes  # noqa: B018

    # the repair works while DETECTRON2_DATASETS points at the broken root
    proc = subprocess.run(
        [sys.executable, "-m", "efl_d2.data.mini_lvis", "--root", str(broken_root), "--force"]
        + ["--num-train-images", "30", "--num-val-images", "8", "--num-categories", "6"]
        + ["--image-size", "64", "96", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    register_mini_lvis(str(broken_root))
    assert len(get_lvis_dataset_dicts("mini_lvis_v1_train")) > 0
    assert len(MetadataCatalog.get("mini_lvis_v1_train").thing_classes) == 6


def test_category_id_outside_the_categories_names_file_and_image(broken_root):
    val_json = broken_root / "lvis" / "mini_lvis_v1_val.json"
    data = json.loads(val_json.read_text())
    ann = data["annotations"][3]
    ann["category_id"] = 999
    val_json.write_text(json.dumps(data))
    image = next(i for i in data["images"] if i["id"] == ann["image_id"])
    register_mini_lvis(str(broken_root))
    with pytest.raises(DatasetFileError) as e:
        get_lvis_dataset_dicts("mini_lvis_v1_val", filter_empty=False)
    msg = str(e.value)
    assert str(val_json) in msg and f"image {ann['image_id']}" in msg
    assert os.path.basename(image["coco_url"]) in msg
    assert "category_id 999" in msg and "ids 1..10" in msg
