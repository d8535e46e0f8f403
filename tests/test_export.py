"""ONNX and TorchScript export of ATSS (efl_d2.export, tools/export_model.py): exported once at one
size, the files give the eager model's detections on images of other padded sizes;
``tools/predict.py --exported`` writes the predictions.json of the checkpoint."""

import json
import os
import sys
import warnings

import numpy as np

# The README's test command installs the [export] extra: without onnx / onnxruntime this file
# fails rather than skips.
import onnx
import onnxruntime  # noqa: F401
import pytest
import torch
from _atss_references import make_atss, make_paa
from _tiny_zoo import (
    TINY_TRAIN_OVERRIDES,
    one_torch_thread,
    refuse_to_open,
    run_in_repo,
    run_tool,
    single_thread_env,
    train_in_process,
)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances
from PIL import Image
from torchvision.ops import nms

from efl_d2 import model_zoo
from efl_d2._warnings import ignore_third_party_deprecations
from efl_d2.engine import apply_overrides_strict
from efl_d2.export import (
    ExportableATSS,
    ExportedFileError,
    ExportedModel,
    ExportMetadata,
    InvalidImageError,
    class_offset_nms,
    export_model,
)
from efl_d2.export import files as export_files
from efl_d2.modeling.candidates import select_candidates

# Test resize of TINY_TRAIN_OVERRIDES: short edge 96, max 384; padding to 32. Each original size
# (H, W) -> resized -> padded: all padded sizes differ from each other and from the export's
# example (96 x 128).
IMAGE_SIZES = {
    "landscape": (120, 200),  # -> 96 x 160 -> 96 x 160
    "portrait": (200, 120),  # -> 160 x 96 -> 160 x 96
    "odd_sides": (130, 100),  # -> 125 x 96 -> 128 x 96
    "panorama": (60, 400),  # max size: -> 58 x 384 -> 64 x 384
    "greyscale": (90, 300),  # an "L" file, read as predict reads it: -> 96 x 320 -> 96 x 320
}
ITERATIONS = 30


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_torch_thread():
        yield


def tiny_config(head: str):
    """The mini-LVIS ATSS config at the session's tiny size, with the improved-baseline head
    (its own) or the original ATSS head (configs/common/models/atss.py, centerness, 1 anchor)."""
    cfg = model_zoo.get_config("mini_lvis/atss_efl_R18.py")
    if head == "original":
        model = model_zoo.get_config("common/models/atss.py").model
        model.head.prior_prob = 0.001
        model.test_score_thresh = 0.0
        model.max_detections_per_image = 300
        cfg.model = model_zoo.small_resnet_fpn(model, from_scratch=True)
    # A fixed data order, and half the config's lr: without its warm-up (train_in_process has
    # no schedule) 0.01 throws the boxes off the image within 25 steps.
    overrides = ["+dataloader.train.seed=0", "optimizer.lr=0.005"]
    return apply_overrides_strict(cfg, [*TINY_TRAIN_OVERRIDES, *overrides])


@pytest.fixture(scope="module")
def trained(mini_lvis_root):
    """``trained(head)``: the tiny config and its model trained for a few iterations, once per
    head."""
    models = {}

    def get(head: str):
        if head not in models:
            cfg = tiny_config(head)
            with one_torch_thread():
                models[head] = cfg, train_in_process(cfg, ITERATIONS).eval()
        return models[head]

    return get


@pytest.fixture(scope="module", params=["improved", "original"])
def exported(request, trained, tmp_path_factory):
    """A trained tiny ATSS, its predictor and its files exported at 96 x 128 (the example of
    ExportMetadata)."""
    cfg, model = trained(request.param)
    assert model.quality == ("iou" if request.param == "improved" else "centerness")
    predictor = model_zoo.LazyPredictor(cfg, model)
    names = MetadataCatalog.get("mini_lvis_v1_val").thing_classes
    metadata = ExportMetadata.from_predictor(predictor, names)
    assert metadata.example_size() == (96, 128)
    folder = tmp_path_factory.mktemp(f"export_{request.param}")
    files = {}
    for fmt, ext in (("onnx", "onnx"), ("torchscript", "pt")):
        files[fmt] = str(folder / f"atss.{ext}")
        export_model(model, metadata, files[fmt], fmt)
    return {"predictor": predictor, "metadata": metadata, **files}


@pytest.fixture(scope="module")
def images(mini_lvis_root, tmp_path_factory):
    """Image files of IMAGE_SIZES: a mini-LVIS val image resized to each size."""
    folder = tmp_path_factory.mktemp("export_images")
    source = Image.open(DatasetCatalog.get("mini_lvis_v1_val")[0]["file_name"]).convert("RGB")
    paths = {}
    for name, (h, w) in IMAGE_SIZES.items():
        image = source.resize((w, h), Image.BILINEAR)
        if name == "greyscale":
            image = image.convert("L")
        paths[name] = str(folder / f"{name}.png")
        image.save(paths[name])
    return paths


def assert_same_detections(got, expected):
    """The same detections: one-to-one, same class, boxes within 1e-3 px, scores within 1e-5.
    Both lists are by decreasing score; their orders may differ between two detections whose
    scores differ by less than onnxruntime's rounding (~1e-7), so detections are paired by
    value (boxes of one class that close would have suppressed each other: a pair is unique)."""
    assert len(got) == len(expected) > 0
    close = (
        (got.pred_classes[:, None] == expected.pred_classes[None])
        & ((got.scores[:, None] - expected.scores[None]).abs() <= 1e-5)
        & ((got.pred_boxes.tensor[:, None] - expected.pred_boxes.tensor[None]).abs() <= 1e-3).all(
            -1
        )
    )
    assert (close.sum(0) == 1).all() and (close.sum(1) == 1).all()


# ----------------------------------------------------------------------------- traceable parts


def test_candidate_count_follows_the_input_size_when_traced():
    """Traced with 20 (anchor, class) pairs, top-50 keeps all pairs of a smaller and the best 50
    of a larger input (not 20)."""

    def top50(scores):
        return select_candidates(scores, score_thresh=0.1, topk_candidates=50)

    traced = torch.jit.trace(top50, torch.rand(4, 5), check_trace=False)
    gen = torch.Generator().manual_seed(0)
    for scores in (torch.rand(2, 5, generator=gen), torch.rand(30, 5, generator=gen)):
        for got, expected in zip(traced(scores), top50(scores)):
            assert torch.equal(got, expected)
    assert len(traced(scores)[0]) == 50


def test_class_offset_nms_is_per_class_nms():
    """On integer boxes the class offsets are exact, so the single NMS must equal torchvision's
    NMS run class by class, and detectron2's batched_nms on either of its paths (eager CPU:
    per-class loop above 1000 boxes, class offsets below)."""
    gen = torch.Generator().manual_seed(0)
    for count in (300, 3000):
        xy = torch.randint(0, 200, (count, 2), generator=gen)
        boxes = torch.cat([xy, xy + torch.randint(5, 60, (count, 2), generator=gen)], 1).float()
        scores = torch.rand(count, generator=gen)
        classes = torch.randint(0, 40, (count,), generator=gen)
        keep = class_offset_nms(boxes, scores, classes, 0.5)
        per_class = torch.cat(
            [
                (classes == c).nonzero()[:, 0][nms(boxes[classes == c], scores[classes == c], 0.5)]
                for c in classes.unique()
            ]
        )
        expected = per_class[scores[per_class].argsort(descending=True)]
        assert torch.equal(keep, expected)
        assert torch.equal(keep, batched_nms(boxes, scores, classes, 0.5))
    assert len(class_offset_nms(boxes[:0], scores[:0], classes[:0], 0.5)) == 0


def test_only_plain_atss_exports():
    with pytest.raises(ValueError, match="Only ATSS models export so far; got PAA"):
        ExportableATSS(make_paa())
    ExportableATSS(make_atss())


# ----------------------------------------------------------------------------- exported files


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_file_gives_the_eager_detections_at_every_size(exported, images, fmt):
    predictor = exported["predictor"]
    model = ExportedModel(exported[fmt], num_threads=1)
    padded = set()
    for name, path in images.items():
        image = predictor.read(path)
        assert image.shape == (*IMAGE_SIZES[name], 3)
        eager = predictor(image)
        assert eager.scores.max() > 2 * eager.scores.min()  # trained: scores differ
        assert_same_detections(model(image), eager)
        h, w = predictor.test_size
        padded.add((-(-h // 32) * 32, -(-w // 32) * 32))
    assert len(padded) == len(images) and (96, 128) not in padded


@pytest.mark.slow
def test_exported_metadata_round_trips(exported):
    expected = ExportMetadata(
        class_names=list(MetadataCatalog.get("mini_lvis_v1_val").thing_classes),
        test_short_edge=96,
        test_max_size=384,
        input_format="BGR",
        meta_architecture="ATSS",
    )
    assert exported["metadata"] == expected
    for fmt in ("onnx", "torchscript"):
        model = ExportedModel(exported[fmt])
        assert model.format == fmt
        assert model.metadata == expected
    graph = onnx.load(exported["onnx"]).graph
    dims = [(d.dim_value, d.dim_param) for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [(3, ""), (0, "height"), (0, "width")]
    assert [o.name for o in graph.output] == ["boxes", "scores", "classes"]


@pytest.mark.slow
def test_export_tool_writes_a_file_that_predicts_as_the_checkpoint(
    trained, images, tmp_path, env_with_datasets
):
    cfg, model = trained("improved")  # the config file's own head, with the tiny overrides
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    output = str(tmp_path / "atss.onnx")
    proc = run_in_repo(
        [
            sys.executable,
            "tools/export_model.py",
            "--config-file",
            "mini_lvis/atss_efl_R18.py",
            "--checkpoint",
            str(tmp_path / "model_final.pth"),
            "--format",
            "onnx",
            "--output",
            output,
            *TINY_TRAIN_OVERRIDES,
        ],
        single_thread_env(env_with_datasets),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {output}" in proc.stdout
    predictor = model_zoo.LazyPredictor(cfg, model)
    image = predictor.read(images["portrait"])
    assert_same_detections(ExportedModel(output)(image), predictor(image))


@pytest.mark.slow
def test_export_tool_missing_checkpoint_is_one_error_line(tmp_path, env_with_datasets):
    missing = str(tmp_path / "missing.pth")
    proc = run_in_repo(
        [
            sys.executable,
            "tools/export_model.py",
            "--config-file",
            "mini_lvis/atss_efl_R18.py",
            "--checkpoint",
            missing,
            "--format",
            "torchscript",
            "--output",
            str(tmp_path / "atss.pt"),
        ],
        single_thread_env(env_with_datasets),
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and missing in lines[0], lines
    assert not os.path.exists(tmp_path / "atss.pt")


def test_resize_and_rescale_are_the_predictors(tmp_path):
    """The exported path's resize and rescale (outside the graph) are the predictor's."""
    from efl_d2.model_zoo.predictor import resize_to_test_size, to_image_pixels

    image = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    metadata = ExportMetadata(["a"], 96, 384, "BGR")
    tensor = resize_to_test_size(image, metadata.augmentations())
    assert tensor.shape == (3, 96, 160) and tensor.dtype == torch.float32
    boxes = torch.tensor([[0.0, 0.0, 80.0, 48.0], [10.0, 10.0, 10.0, 20.0], [150, 90, 170, 99]])
    out = to_image_pixels(
        boxes, torch.ones(3), torch.zeros(3, dtype=torch.long), (96, 160), (120, 200)
    )
    # scaled by 120/96 and 200/160 = 1.25, clipped to the image, the empty box dropped
    assert out.image_size == (120, 200)
    assert torch.equal(
        out.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 100.0, 60.0], [187.5, 112.5, 200.0, 120.0]])
    )


# ----------------------------------------------------------------------------- predict --exported


def predict_process(args: list, env: dict):
    """``tools/predict.py args`` as run from a shell (single-threaded); the CompletedProcess."""
    return run_in_repo([sys.executable, "tools/predict.py", *args], single_thread_env(env))


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.strip()]


def records_as_instances(record: dict) -> Instances:
    """One image's detections of predictions.json as Instances (boxes back to XYXY)."""
    found = record["instances"]
    xywh = torch.tensor([d["bbox"] for d in found], dtype=torch.float64).reshape(-1, 4)
    return Instances(
        (record["height"], record["width"]),
        pred_boxes=Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)),
        scores=torch.tensor([d["score"] for d in found], dtype=torch.float64),
        pred_classes=torch.tensor([d["category_id"] for d in found], dtype=torch.int64),
    )


@pytest.fixture(scope="module")
def predict_files(trained, images, tmp_path_factory):
    """The tiny config's own-head model as a checkpoint and as both exported files, and the
    inputs: the folder of ``images`` (five sizes, one greyscale) and an RGBA file elsewhere."""
    cfg, model = trained("improved")
    folder = tmp_path_factory.mktemp("predict_exported")
    DetectionCheckpointer(model, str(folder)).save("model_final")
    names = MetadataCatalog.get("mini_lvis_v1_val").thing_classes
    metadata = ExportMetadata.from_predictor(model_zoo.LazyPredictor(cfg, model), names)
    files = {"checkpoint": str(folder / "model_final.pth")}
    with warnings.catch_warnings():  # set up before the per-test filters of conftest
        ignore_third_party_deprecations()
        for fmt, ext in (("onnx", "onnx"), ("torchscript", "pt")):
            files[fmt] = str(folder / f"atss.{ext}")
            export_model(model, metadata, files[fmt], fmt)
    rgba = np.asarray(Image.open(images["landscape"]).convert("RGBA").resize((170, 110))).copy()
    rgba[..., 3] = np.arange(170, dtype=np.uint8)[None]  # an alpha channel that varies
    files["rgba"] = str(folder / "rgba.png")
    Image.fromarray(rgba).save(files["rgba"])
    files["inputs"] = [os.path.dirname(images["landscape"]), files["rgba"]]
    return files


@pytest.fixture(scope="module")
def untrained_files(tmp_path_factory):
    """An untrained tiny ATSS exported in both formats (test size 64, max 256): enough for what
    happens before the graph runs."""
    folder = tmp_path_factory.mktemp("untrained_export")
    metadata = ExportMetadata(["a", "b", "c", "d"], 64, 256, "BGR")
    files = {}
    # set up before the per-test filters of conftest: its own (detectron2's meshgrid call)
    with one_torch_thread(), warnings.catch_warnings():
        ignore_third_party_deprecations()
        for fmt, ext in (("onnx", "onnx"), ("torchscript", "pt")):
            files[fmt] = str(folder / f"atss.{ext}")
            export_model(make_atss().eval(), metadata, files[fmt], fmt)
    return files


@pytest.mark.slow
def test_predict_exported_writes_the_checkpoints_predictions(
    predict_files, tmp_path, env_with_datasets
):
    """``--exported`` (no config) gives, image by image, the detections of ``--config-file
    --checkpoint``: same count, classes and names, boxes within 1e-3 px, scores within 1e-5;
    the pictures are drawn at the same sizes, with boxes and labels at the same places."""
    common = ["--input", *predict_files["inputs"], "--device", "cpu"]
    proc = predict_process(
        ["--config-file", "mini_lvis/atss_efl_R18.py", "--checkpoint", predict_files["checkpoint"]]
        + [*common, "--output", str(tmp_path / "checkpoint"), *TINY_TRAIN_OVERRIDES],
        env_with_datasets,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads((tmp_path / "checkpoint" / "predictions.json").read_text())
    assert len(expected["images"]) == len(IMAGE_SIZES) + 1 and not expected["failed"]
    names = expected["class_names"]
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / fmt
        proc = predict_process(
            ["--exported", predict_files[fmt], *common, "--output", str(out)], env_with_datasets
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads((out / "predictions.json").read_text())
        assert got["config"] is None and got["checkpoint"] is None and got["dataset"] is None
        assert got["exported"] == predict_files[fmt] and got["class_names"] == names
        assert not got["failed"]
        assert [r["file_name"] for r in got["images"]] == [
            r["file_name"] for r in expected["images"]
        ]
        for record, reference in zip(got["images"], expected["images"]):
            assert (record["height"], record["width"]) == (reference["height"], reference["width"])
            assert_same_detections(records_as_instances(record), records_as_instances(reference))
            for detection in record["instances"]:
                assert detection["category_name"] == names[detection["category_id"]]
            assert record["vis_threshold"] == pytest.approx(reference["vis_threshold"], abs=1e-5)
            with Image.open(record["visualization"]) as im:
                drawn = np.asarray(im.convert("RGB")).astype(int)
            with Image.open(reference["visualization"]) as im:
                reference_drawn = np.asarray(im.convert("RGB")).astype(int)
            with Image.open(record["file_name"]) as im:
                original = np.asarray(im.convert("RGB")).astype(int)
            assert drawn.shape == reference_drawn.shape == original.shape
            assert np.abs(drawn - original).mean() > 1  # boxes and labels were drawn
            # at the same places: detectron2's Visualizer jitters each box's colour at random,
            # so the pictures are compared by the pixels that drawing changed
            changed, reference_changed = (
                (drawn != original).any(-1),
                (reference_drawn != original).any(-1),
            )
            overlap = (changed & reference_changed).sum() / (changed | reference_changed).sum()
            assert overlap > 0.99


@pytest.mark.slow
def test_predict_exported_lists_bad_images_and_exits_1(untrained_files, images, tmp_path):
    """An image file the reader refuses (damaged; 32-bit float, a wrong dtype for the model) or
    one the exported model refuses (1 x 1000: no row left at the test size) is a ``warning:``
    line, is listed under ``failed``, and makes the exit status 1 after the good image is
    done. (Greyscale and RGBA files are converted to 3 channels by the reader.)"""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.open(images["landscape"]).save(folder / "good.png")
    (folder / "damaged.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.fromarray(np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30)).save(
        folder / "float.tif"
    )
    Image.fromarray(np.full((1, 1000, 3), 200, np.uint8)).save(folder / "thin.png")
    out = tmp_path / "out"
    proc = predict_process(
        ["--exported", untrained_files["onnx"], "--input", str(folder), "--output", str(out)],
        dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert lines[-1] == (
        f"error: 3 of 4 images could not be read or predicted (listed under 'failed' in "
        f"{out / 'predictions.json'})"
    )
    result = json.loads((out / "predictions.json").read_text())
    assert [os.path.basename(r["file_name"]) for r in result["images"]] == ["good.png"]
    assert os.path.isfile(result["images"][0]["visualization"])
    errors = {os.path.basename(r["file_name"]): r["error"] for r in result["failed"]}
    assert sorted(errors) == ["damaged.jpg", "float.tif", "thin.png"]
    assert errors["damaged.jpg"].startswith("Cannot read image")
    assert "'F'" in errors["float.tif"]
    assert "1x1000 image (height x width) is resized to 0x256" in errors["thin.png"]
    assert lines[:-1] == [f"warning: {errors[name]}" for name in sorted(errors)]


def test_exported_model_refuses_bad_arrays_by_name(untrained_files, images):
    """A direct call with an array the graph cannot take is an InvalidImageError (a ValueError)
    naming the problem, not an error from inside onnxruntime or TorchScript; a path is read as
    ``read`` reads it."""
    bad = {
        "wrong dtype": (np.zeros((40, 60, 3), np.float32), r"uint8 image .* got dtype float32"),
        "0-sized": (np.zeros((0, 0, 3), np.uint8), r"empty \(shape \(0, 0, 3\)\)"),
        "no columns": (np.zeros((40, 0, 3), np.uint8), r"empty"),
        "4 channels": (np.zeros((40, 60, 4), np.uint8), r"shape \(40, 60, 4\) \(4 channels"),
        "2-D": (np.zeros((40, 60), np.uint8), r"\(H, W, 3\) image in BGR .* \(40, 60\)$"),
        "too thin": (np.zeros((1, 1000, 3), np.uint8), r"1x1000 image .* resized to 0x256"),
        "a tensor": (torch.zeros(40, 60, 3, dtype=torch.uint8), r"numpy array, got a Tensor"),
    }
    for fmt in ("onnx", "torchscript"):
        model = ExportedModel(untrained_files[fmt])
        for array, message in bad.values():
            with pytest.raises(InvalidImageError, match=message):
                model(array)
        assert model.test_size is None  # nothing ran
        image = model.read(images["greyscale"])
        assert image.shape == (*IMAGE_SIZES["greyscale"], 3) and image.dtype == np.uint8
        from_path = model(images["greyscale"])
        assert model.test_size == (64, 213)
        assert torch.equal(from_path.pred_boxes.tensor, model(image).pred_boxes.tensor)
    assert issubclass(InvalidImageError, ValueError)


def _bad_exported_files(folder, untrained_files) -> dict:
    """One path per kind of file ``--exported`` refuses, and a phrase of its message."""
    folder.mkdir()
    (folder / "text.onnx").write_text("not a model\n")
    (folder / "empty.onnx").write_bytes(b"")
    torch.save({"model": {"w": torch.zeros(2)}}, folder / "model_final.pth")
    torch.save({"model": {}}, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    with open(untrained_files["torchscript"], "rb") as f:
        data = f.read()
    (folder / "cut.pt").write_bytes(data[: len(data) // 2])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), folder / "foreign.onnx")
    torch.jit.save(torch.jit.trace(torch.nn.ReLU(), torch.zeros(1)), folder / "foreign.pt")
    return {
        "missing": (folder / "nope.onnx", "no such file"),
        "directory": (folder, "is a directory"),
        "text": (folder / "text.onnx", "neither TorchScript nor ONNX"),
        "empty": (folder / "empty.onnx", "is empty"),
        "checkpoint": (folder / "model_final.pth", "is a PyTorch checkpoint (torch.save)"),
        "legacy checkpoint": (folder / "legacy.pth", "is a pickle"),
        "truncated TorchScript": (folder / "cut.pt", "truncated or damaged"),
        "ONNX of another tool": (folder / "foreign.onnx", "has no efl_d2 metadata"),
        "TorchScript of another tool": (folder / "foreign.pt", "has no efl_d2 metadata"),
    }


def test_bad_exported_files_are_one_error_line_and_status_2(
    untrained_files, images, tmp_path, capsys
):
    bad = _bad_exported_files(tmp_path / "bad", untrained_files)
    for kind, (path, phrase) in bad.items():
        out = tmp_path / f"out_{kind}"
        with pytest.raises(SystemExit) as e:
            run_tool("predict").main(
                ["--exported", str(path), "--input", images["landscape"], "--output", str(out)]
            )
        assert e.value.code == 2, kind
        (line,) = error_lines(capsys.readouterr().err)
        assert line.startswith(f"error: Exported file {path}") and phrase in line, (kind, line)
        assert not out.exists()
        with pytest.raises(ExportedFileError):  # the library's own error (a ValueError)
            ExportedModel(str(path))


def test_an_exported_file_it_may_not_read_is_one_error_line(
    untrained_files, images, tmp_path, capsys, monkeypatch
):
    """Simulated (the tests may run as root, who reads any file): opening it is refused."""
    path = untrained_files["onnx"]

    refuse_to_open(monkeypatch, export_files, path)
    with pytest.raises(SystemExit) as e:
        run_tool("predict").main(
            ["--exported", path, "--input", images["landscape"], "--output", str(tmp_path / "o")]
        )
    assert e.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: Exported file {path}") and "permission denied" in line


@pytest.mark.slow
def test_predict_process_on_a_checkpoint_given_as_exported(untrained_files, images, tmp_path):
    """From a shell: exit status 2 and one line, which says to use --checkpoint."""
    bad = _bad_exported_files(tmp_path / "bad", untrained_files)
    path, phrase = bad["checkpoint"]
    out = tmp_path / "out"
    proc = predict_process(
        ["--exported", str(path), "--input", images["landscape"], "--output", str(out)],
        dict(os.environ),
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = error_lines(proc.stderr)
    assert phrase in line and "--checkpoint" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--exported", "m.onnx", "--config-file", "c.py"], "--config-file cannot be used with"),
        (["--exported", "m.onnx", "--dataset", "d"], "--dataset cannot be used with --exported"),
        (["--exported", "m.onnx", "--device", "cuda"], "run on the CPU"),
        (["--checkpoint", "m.pth"], "--config-file is required with --checkpoint and --trained"),
        (["--trained"], "--config-file is required with --checkpoint and --trained"),
        (["--exported", "m.onnx", "--checkpoint", "m.pth"], "not allowed with argument"),
    ],
)
def test_predict_options_that_do_not_go_with_the_weights(args, message, tmp_path, capsys):
    """argparse errors (status 2), before any file is looked at."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        run_tool("predict").main([*args, "--input", "a.jpg", "--output", str(out)])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_predict_refuses_config_overrides_with_exported(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_tool("predict").main(
            ["--exported", "m.onnx", "--input", "a.jpg", "--output", str(tmp_path / "o")]
            + ["model.test_score_thresh=0.5"]
        )
    assert e.value.code == 2
    assert "config overrides (key=value) cannot be used with --exported" in capsys.readouterr().err
