"""The official EFL test pipeline around the network (efl_d2.official): OpenCV keep-aspect-ratio
resize, padding to 64 and /255 normalisation, United-Perception's NMS, clipping and result boxes,
and loading the official release in either class layout through model_zoo.get(trained=True).

Reference values are worked out by hand in the comments (or come from torchvision's own
to_tensor/normalize), not from the code under test.
"""

import sys

import numpy as np
import pytest
import torch
from _official_checkpoints import official_state_dict, save_official
from _tiny_zoo import image_batch, one_torch_thread, randomize_, write_tiny_config
from detectron2.config import instantiate
from detectron2.data import transforms as T
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances
from torchvision.transforms import functional as TF

from efl_d2 import model_zoo
from efl_d2.model_zoo.model_zoo import CheckpointEntry, _ModelZooUrls
from efl_d2.official import (
    OfficialATSS,
    OfficialLastLevelP6P7,
    OpenCVResizeShortestEdge,
    OpenCVResizeTransform,
    clip_inclusive_,
    official_nms,
    opencv_resized_shape,
    rescale_inclusive,
    use_official_architecture,
    use_official_inference,
)

pytest.importorskip("cv2")


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_torch_thread():
        yield


# ----------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "h, w, official, detectron2",
    [
        # 800 / 512 = 1.5625; 584 * 1.5625 = 912.5: OpenCV rounds half to even, detectron2 up
        (584, 512, (912, 800), (913, 800)),
        (600, 512, (938, 800), (938, 800)),  # 937.5 -> 938 (even) both ways
        # long side caps the factor: min(800/500, 1333/2000) = 0.6665; 500 * 0.6665 = 333.25
        (500, 2000, (333, 1333), (333, 1333)),
    ],
)
def test_resize_output_size(h, w, official, detectron2):
    image = np.zeros((h, w, 3), dtype=np.uint8)
    transform = OpenCVResizeShortestEdge(800, 1333).get_transform(image)
    assert isinstance(transform, OpenCVResizeTransform)
    assert transform.apply_image(image).shape == (*official, 3)
    assert (transform.new_h, transform.new_w) == official
    assert T.ResizeShortestEdge.get_output_shape(h, w, 800, 1333) == detectron2


def test_output_size_halves_go_to_even():
    assert opencv_resized_shape(5, 3, 0.5) == (2, 2)  # 2.5 -> 2, 1.5 -> 2
    assert opencv_resized_shape(7, 1, 0.5) == (4, 0)  # 3.5 -> 4, 0.5 -> 0


def test_resize_pixels_hand_checked():
    # dst x samples src (x + 0.5) / f - 0.5, clamped at the borders, then linear interpolation
    # with 11-bit fixed-point weights.
    # f = 2 on [0, 100]: src -0.25, 0.25, 0.75, 1.25 -> 0, 25, 75, 100
    ramp = np.array([[0, 100]], dtype=np.uint8)
    assert OpenCVResizeTransform(1, 2, 2.0).apply_image(ramp).tolist() == [[0, 25, 75, 100]] * 2
    # f = 1.5 on [0, 90, 180] (4.5 -> 4 columns): src -1/6, 1/2, 7/6, 11/6 -> 0, 45,
    # 90 + 90 * 341/2048 = 104.99 -> 105, 90 + 90 * 1707/2048 = 165.01 -> 165. Detectron2's
    # target-size resize would sample src 0.625 for column 1 instead of 0.5.
    ramp = np.array([[0, 90, 180]], dtype=np.uint8)
    out = OpenCVResizeTransform(1, 3, 1.5).apply_image(ramp)
    assert out.tolist() == [[0, 45, 105, 165]] * 2
    rgb = np.stack([ramp, ramp // 2, ramp // 3], axis=-1)  # channels are resized independently
    assert OpenCVResizeTransform(1, 3, 1.5).apply_image(rgb)[0, :, 0].tolist() == [0, 45, 105, 165]
    assert OpenCVResizeTransform(1, 3, 1.5).apply_image(ramp[..., None]).shape == (2, 4, 1)


def test_resize_boxes_plain_and_inclusive():
    # 584 x 512 -> 912 x 800: f_x = 800 / 512 = 1.5625, f_y = 912 / 584
    fy = 912 / 584
    box = np.array([[10.0, 20.0, 30.0, 40.0]])
    plain = OpenCVResizeTransform(584, 512, 800 / 512).apply_box(box.copy())
    np.testing.assert_allclose(plain, [[15.625, 20 * fy, 46.875, 40 * fy]])
    # official: inclusive x2 = 29 scaled, + 1: 29 * 1.5625 + 1 = 46.3125
    inclusive = OpenCVResizeTransform(584, 512, 800 / 512, inclusive_boxes=True).apply_box(box)
    np.testing.assert_allclose(inclusive, [[15.625, 20 * fy, 46.3125, 39 * fy + 1]])


def test_missing_opencv_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match="pip install opencv-python-headless"):
        OpenCVResizeTransform(4, 4, 2.0).apply_image(np.zeros((4, 4), dtype=np.uint8))


# ----------------------------------------------------------------------------- model input


@pytest.fixture(scope="module")
def official_tiny(tmp_path_factory):
    """The tiny ATSS config switched to the official architecture and test pipeline."""
    config = write_tiny_config(tmp_path_factory.mktemp("official_pipeline"))
    cfg = use_official_inference(use_official_architecture(model_zoo.get_config(config)))
    return config, cfg


def test_padding_to_64_and_official_normalisation(official_tiny):
    _, cfg = official_tiny
    model = instantiate(cfg.model).eval()
    image = torch.randint(0, 256, (3, 70, 130), dtype=torch.uint8)
    batch = model.preprocess_image([{"image": image}])
    assert batch.tensor.shape == (1, 3, 128, 192)  # 70 x 130 -> multiples of 64
    # torchvision's to_tensor (/255) and normalize, as the official loader
    hwc = image.permute(1, 2, 0).numpy()
    expected = TF.normalize(TF.to_tensor(hwc), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.equal(batch.tensor[0, :, :70, :130], expected)  # bit for bit
    assert not batch.tensor[0, :, 70:].any() and not batch.tensor[0, :, :, 130:].any()
    model.size_divisibility = 0  # the backbone's (32)
    assert model.preprocess_image([{"image": image}]).tensor.shape == (1, 3, 96, 160)


# ----------------------------------------------------------------------------- boxes


def test_clip_to_the_inclusive_image():
    # w = 100, h = 50: UP clips its inclusive corners to [0, 99] x [0, 49], i.e. a Detectron2 box
    # to x1 in [0, 99], x2 in [1, 100]; boxes outside keep 1 px instead of becoming empty.
    boxes = torch.tensor(
        [[-5.0, -5.0, 0.5, 0.25], [120.0, 60.0, 130.0, 70.0], [10.0, 10.0, 20.0, 20.0]]
    )
    clip_inclusive_(boxes, (50, 100))
    assert boxes.tolist() == [[0, 0, 1, 1], [99, 49, 100, 50], [10, 10, 20, 20]]


def test_result_boxes_follow_the_official_dump():
    # Network input 800 x 800 from a 400 x 512 image: f_y = 2, f_x = 1.5625. The official dump
    # divides the inclusive corners by the factors and writes w = x2 - x1 + 1:
    # box 1 (inclusive x2 = 199.5, y2 = 150): x 100 / 1.5625 = 64, y 25,
    #   w (199.5 - 100) / 1.5625 + 1 = 64.68, h (150 - 50) / 2 + 1 = 51;
    # box 2 (the whole input, inclusive 799 x 799): w 799 / 1.5625 + 1 = 512.36, h 400.5 — past
    #   the original image, which the official code does not clip (Detectron2 would, to 512).
    boxes = torch.tensor([[100.0, 50.0, 200.5, 151.0], [0.0, 0.0, 800.0, 800.0]])
    out = rescale_inclusive(boxes, (800, 800), (400, 512))
    results = Instances((400, 512), pred_boxes=Boxes(out))
    results.scores = torch.tensor([0.9, 0.8])
    results.pred_classes = torch.tensor([3, 4])
    json_boxes = [r["bbox"] for r in instances_to_coco_json(results, img_id=1)]  # LVISEvaluator's
    np.testing.assert_allclose(json_boxes, [[64, 25, 64.68, 51], [0, 0, 512.36, 400.5]], rtol=1e-6)


# ----------------------------------------------------------------------------- NMS


def _pair(class_b=0):
    # Detectron2 boxes A = [0, 0, 4, 4], B = [1, 0, 5, 4]: inclusive [0, 0, 3, 3] and [1, 0, 4, 3].
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 0.0, 5.0, 4.0]])
    return boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, class_b])


def test_nms_with_and_without_plus_one():
    boxes, scores, classes = _pair()
    # "+1" widths on the inclusive boxes (= Detectron2's IoU): inter 3 x 4 = 12, union 20: 0.6
    assert official_nms(boxes, scores, classes, 0.5, plus_one=True).tolist() == [0]
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == [0]
    # UP 0.1.0, no "+1" on the inclusive boxes: inter 2 x 3 = 6, areas 9, union 12: IoU 0.5, not
    # above the threshold, so B survives
    assert official_nms(boxes, scores, classes, 0.5, plus_one=False).tolist() == [0, 1]
    boxes, scores, classes = _pair(class_b=7)  # other class: never suppressed
    for plus_one in (True, False):
        got = official_nms(boxes, scores, classes, 0.5, plus_one=plus_one)
        assert got.tolist() == [0, 1]


def test_nms_reproduces_the_float32_class_shift():
    # Inclusive A = [0, 0, 10, 10], B = [3.3, 0, 13.3, 10], no "+1": IoU 67 / 133 = 0.504 > 0.5.
    # Class 0 is shifted by 4096 (float32 step 2^-11): B is suppressed. Class 1202 is shifted by
    # 1203 * 4096 = 4927488 (step 0.5): B's x becomes 3.5 / 13.5, IoU 65 / 135 = 0.481: kept.
    boxes = torch.tensor([[0.0, 0.0, 11.0, 11.0], [3.3, 0.0, 14.3, 11.0]])
    scores = torch.tensor([0.9, 0.8])
    for cls, kept in ((0, [0]), (1202, [0, 1])):
        classes = torch.full((2,), cls)
        assert official_nms(boxes, scores, classes, 0.5, plus_one=False).tolist() == kept


# ----------------------------------------------------------------------------- class layouts


def test_trained_official_release_loads_either_class_layout(official_tiny, tmp_path, monkeypatch):
    config, cfg = official_tiny
    source = randomize_(instantiate(cfg.model), seed=11).eval()
    files = {}
    for layout in ("anchor_major", "class_major"):
        sd = official_state_dict(source, class_major=layout == "class_major")
        files[layout] = save_official(sd, str(tmp_path / f"{layout}.pth"), "model", True)
    catalog = dict(_ModelZooUrls.CONFIG_PATH_TO_CHECKPOINT)
    catalog[config[: -len(".py")]] = CheckpointEntry(url=files["class_major"], source="official")
    monkeypatch.setattr(_ModelZooUrls, "CONFIG_PATH_TO_CHECKPOINT", catalog)

    model = model_zoo.get(config, trained=True, device="cpu", official_cls_layout="class_major")
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    inputs = image_batch(seed=2)
    with torch.no_grad():
        expected = source(inputs)[0]["instances"]
        got = model(inputs)[0]["instances"]
    assert len(got) > 0 and torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(got.scores, expected.scores)
    # the same file read as anchor-major (the default) scrambles the classifier
    wrong = model_zoo.get(config, trained=True, device="cpu")
    assert not torch.equal(wrong.head.cls_score.weight, source.head.cls_score.weight)
    # and the anchor-major file is read correctly by default
    catalog[config[: -len(".py")]] = CheckpointEntry(url=files["anchor_major"], source="official")
    right = model_zoo.get(config, trained=True, device="cpu")
    assert torch.equal(right.head.cls_score.weight, source.head.cls_score.weight)


def test_official_config_file_is_the_trained_model_zoo_config():
    """configs/official/ states the official architecture and pipeline as a config diff; it is
    the config model_zoo.get_config(trained=True) builds for the official release."""
    import json

    from omegaconf import OmegaConf

    def plain(node):
        container = OmegaConf.to_container(node, resolve=True)
        return json.loads(json.dumps(container, default=lambda o: o.__qualname__, sort_keys=True))

    diff = model_zoo.get_config("official/atss_improved_R50_2x_efl.py")
    trained = model_zoo.get_config("LVIS/atss_improved_R50_2x_efl.py", trained=True)
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert plain(diff[key]) == plain(trained[key]), key
    assert diff.model._target_ is OfficialATSS
    assert diff.model.backbone.top_block._target_ is OfficialLastLevelP6P7
    assert diff.model.size_divisibility == 64 and diff.model.pixel_divisor == 255.0
