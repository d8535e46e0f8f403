"""ONNX and TorchScript export of ATSS (efl_d2.export, tools/export_model.py): exported once at one
size, the files give the eager model's detections on images of other padded sizes."""

import os
import sys

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
    run_in_repo,
    single_thread_env,
    train_in_process,
)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import batched_nms
from PIL import Image
from torchvision.ops import nms

from efl_d2 import model_zoo
from efl_d2.engine import apply_overrides_strict
from efl_d2.export import (
    ExportableATSS,
    ExportedModel,
    ExportMetadata,
    class_offset_nms,
    export_model,
)
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
