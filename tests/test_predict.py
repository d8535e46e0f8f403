"""tools/predict.py: images or a folder in, visualisations and a JSON of detections out."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from _tiny_zoo import (
    one_torch_thread,
    randomize_,
    run_in_repo,
    run_tool,
    single_thread_env,
    write_tiny_config,
)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from PIL import Image

from efl_d2 import model_zoo

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def setup(tmp_path, mini_lvis_root):
    config = write_tiny_config(tmp_path)
    model = randomize_(model_zoo.get(config, device="cpu"), seed=21).eval()
    with torch.no_grad():  # a few confident boxes, so something is drawn
        model.head.cls_score.bias[3::10] = 2.0
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    images = tmp_path / "images"
    images.mkdir()
    files = [d["file_name"] for d in DatasetCatalog.get("mini_lvis_v1_val")[:3]]
    for f in files[:2]:
        shutil.copy(f, images)
    return config, model, str(tmp_path / "model_final.pth"), str(images), files


def expected_detections(model, path):
    """Independent pre-processing: PIL -> BGR -> ResizeShortestEdge(96, max 128) -> model."""
    bgr = np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1]
    h, w = bgr.shape[:2]
    resized = T.ResizeShortestEdge(96, 128).get_transform(bgr).apply_image(bgr)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
    with torch.no_grad():
        return model([{"image": tensor, "height": h, "width": w}])[0]["instances"]


@pytest.mark.slow
def test_predict_cli_folder_and_file(setup, tmp_path, env_with_datasets):
    config, model, checkpoint, folder, files = setup
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "predict.py"),
        "--config-file",
        config,
        "--checkpoint",
        checkpoint,
        "--input",
        folder,
        files[2],
        "--output",
        str(out),
    ]
    proc = run_in_repo(cmd, single_thread_env(env_with_datasets), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "predictions.json") as f:
        result = json.load(f)
    names = [c.lower() for c in result["class_names"]]
    assert result["dataset"] == "mini_lvis_v1_val" and len(names) == 10
    assert [os.path.basename(r["file_name"]) for r in result["images"]] == [
        os.path.basename(f) for f in sorted(files[:2])
    ] + [os.path.basename(files[2])]
    for record in result["images"]:
        expected = expected_detections(model, record["file_name"])
        got = record["instances"]
        assert len(got) == len(expected) > 0
        boxes = expected.pred_boxes.tensor.numpy()
        np.testing.assert_allclose(
            [g["bbox"] for g in got], np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], atol=1e-3
        )
        np.testing.assert_allclose([g["score"] for g in got], expected.scores.numpy(), atol=1e-5)
        assert [g["category_id"] for g in got] == expected.pred_classes.tolist()
        assert [g["category_name"].lower() for g in got] == [
            names[c] for c in expected.pred_classes
        ]
        # the library's rule: drawn are the boxes scoring at least half the image's top score
        top = float(expected.scores.max())
        assert record["vis_threshold"] == pytest.approx(max(0.05, 0.5 * top))
        assert (expected.scores >= record["vis_threshold"]).sum() > 0  # boxes were drawn
        with Image.open(record["visualization"]) as im:
            assert im.size == (record["width"], record["height"])
            drawn = np.asarray(im.convert("RGB")).astype(int)
        original = np.asarray(Image.open(record["file_name"]).convert("RGB")).astype(int)
        assert np.abs(drawn - original).mean() > 1  # boxes and labels were drawn


def test_predict_bad_input_is_a_clear_error(setup, tmp_path):
    config, _, checkpoint, _, _ = setup
    with pytest.raises(SystemExit, match="neither an image file nor a folder"):
        run_tool("predict").main(
            [
                "--config-file",
                config,
                "--checkpoint",
                checkpoint,
                "--input",
                str(tmp_path / "nope"),
                "--output",
                str(tmp_path / "o"),
            ]
        )


def test_predict_goes_on_past_an_unreadable_image_and_fails_at_the_end(setup, tmp_path):
    config, _, checkpoint, folder, _ = setup
    broken = os.path.join(folder, "broken.jpg")
    with open(broken, "wb") as f:
        f.write(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "o"
    with pytest.raises(SystemExit, match="1 of 3 images could not be read"):
        run_tool("predict").main(
            ["--config-file", config, "--checkpoint", checkpoint, "--input", folder]
            + ["--output", str(out)]
        )
    result = json.loads((out / "predictions.json").read_text())
    assert len(result["images"]) == 2  # the readable ones are kept
    assert [os.path.basename(r["file_name"]) for r in result["failed"]] == ["broken.jpg"]
    assert "Cannot read image" in result["failed"][0]["error"]
    assert not [p for p in os.listdir(out) if ".tmp-" in p]


def _synthetic_photo(path, height: int, width: int, seed: int = 0) -> str:
    """A smooth random RGB picture (a JPEG of a few MB at 4000x4000 rather than 48 MB of noise)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 40 + 2, width // 40 + 2, 3))
    Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR).save(
        path, quality=92
    )
    return str(path)


@pytest.mark.parametrize("resize", ["ResizeShortestEdge", "OpenCVResizeShortestEdge"])
def test_a_large_images_detections_are_the_models_on_its_resized_pixels(setup, tmp_path, resize):
    """Resizing first, in the file's channel order, changes nothing: the detections are the
    model's on the test-size image made by the config's resize from the decoded image."""
    from detectron2.config import LazyCall as L

    from efl_d2.official import OpenCVResizeShortestEdge

    config, model, _, _, _ = setup
    cfg = model_zoo.get_config(config)
    aug = T.ResizeShortestEdge(96, 128)
    fmt = "BGR"
    if resize == "OpenCVResizeShortestEdge":  # the official release's test pipeline: RGB, cv2
        pytest.importorskip("cv2")
        cfg.dataloader.test.mapper.augmentations = [
            L(OpenCVResizeShortestEdge)(short_edge_length=96, max_size=128)
        ]
        cfg.dataloader.test.mapper.image_format = fmt = "RGB"
        aug = OpenCVResizeShortestEdge(96, 128)
    path = _synthetic_photo(tmp_path / "large.jpg", 1200, 1700, seed=3)
    predictor = model_zoo.LazyPredictor(cfg, model)
    got = predictor(path)

    rgb = np.asarray(Image.open(path).convert("RGB"))
    image = rgb if fmt == "RGB" else rgb[:, :, ::-1]
    resized = aug.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
    with torch.no_grad():
        expected = model([{"image": tensor, "height": 1200, "width": 1700}])[0]["instances"]
    assert predictor.test_size == resized.shape[:2] == (90, 128)
    assert len(got) == len(expected) > 0 and got.image_size == (1200, 1700)
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(got.scores, expected.scores)
    assert torch.equal(got.pred_classes, expected.pred_classes)
    assert got.pred_boxes.tensor[:, 2].max() > 128  # in the input's pixels, not the test size's


def test_predict_draws_a_large_image_smaller_and_keeps_boxes_in_input_pixels(setup, tmp_path):
    config, model, checkpoint, _, _ = setup
    path = _synthetic_photo(tmp_path / "large.jpg", 1200, 1700, seed=4)
    out = tmp_path / "o"
    result = run_tool("predict").main(
        ["--config-file", config, "--checkpoint", checkpoint, "--input", path]
        + ["--output", str(out)]
    )
    (record,) = result["images"]
    assert (record["height"], record["width"]) == (1200, 1700)
    expected = expected_detections(model, path)
    boxes = expected.pred_boxes.tensor.numpy()
    np.testing.assert_allclose(
        [g["bbox"] for g in record["instances"]],
        np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]],
        atol=1e-3,
    )
    np.testing.assert_allclose([g["score"] for g in record["instances"]], expected.scores.numpy())
    with Image.open(record["visualization"]) as im:  # twice the 90x128 the model saw
        assert im.size == (256, 181)
        drawn = np.asarray(im.convert("RGB")).astype(int)
    with Image.open(path) as im:
        original = np.asarray(im.convert("RGB").resize((256, 181), Image.BILINEAR)).astype(int)
    assert np.abs(drawn - original).mean() > 1  # boxes and labels were drawn


@pytest.mark.slow
def test_predict_memory_follows_the_test_size_not_the_image_size(
    setup, tmp_path, env_with_datasets
):
    """Peak memory (max RSS) of predict.py on a 4000x4000 image exceeds that on a 640x480 one by
    less than 3 times the large image's uint8 size (it was 40 times: full-size copies and a
    full-size drawing)."""
    config, _, checkpoint, _, _ = setup
    code = (
        "import resource, runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__'); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peaks = {}
    for name, (height, width) in {"small": (480, 640), "large": (4000, 4000)}.items():
        path = _synthetic_photo(tmp_path / f"{name}.jpg", height, width)
        cmd = [sys.executable, "-c", code, os.path.join(REPO, "tools", "predict.py")]
        cmd += ["--config-file", config, "--checkpoint", checkpoint, "--input", path]
        cmd += ["--output", str(tmp_path / name), "--device", "cpu"]
        proc = run_in_repo(cmd, single_thread_env(env_with_datasets), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks[name] = int(proc.stdout.split("MAXRSS")[-1]) * unit
    image_bytes = 4000 * 4000 * 3
    growth = peaks["large"] - peaks["small"]
    assert growth < 3 * image_bytes, (
        f"peak {peaks['large'] / 2**20:.0f} MiB on 4000x4000 vs {peaks['small'] / 2**20:.0f} MiB "
        f"on 640x480: {growth / image_bytes:.1f} x the image's uint8 size"
    )
