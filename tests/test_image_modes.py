"""efl_d2.data.image_io: 8-bit images read as detectron2 reads them, 16-bit greyscale mapped to
8 bits (not clipped to white), float images refused; the same reader in RobustDatasetMapper and
tools/predict.py; image_file_problem for preflights."""

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_zoo import one_torch_thread, randomize_, run_tool, write_tiny_config
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from omegaconf import OmegaConf
from PIL import Image, ImageFile, TiffImagePlugin

from efl_d2 import model_zoo
from efl_d2.data import RobustDatasetMapper
from efl_d2.data.image_io import UnsupportedImageModeError, image_file_problem, read_image

FORMATS = ("RGB", "BGR", "L")


def _expected_8bit(values: np.ndarray) -> np.ndarray:
    """The documented rule, in floating point: round(v * 255 / 65535)."""
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _photo(height: int = 30, width: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth random (H, W, 3) uint8 picture (JPEG-friendly)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 8 + 2, width // 8 + 2, 3))
    return np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height)))


def _sixteen_bit_values(height: int = 30, width: int = 40, seed: int = 1) -> np.ndarray:
    """(H, W) uint16 values spanning 0..65535, with both ends and the rounding edges 128 / 129
    (128 / 257 rounds down, 129 / 257 up)."""
    values = np.random.default_rng(seed).integers(0, 65536, (height, width)).astype(np.uint16)
    values.flat[:6] = [0, 65535, 128, 129, 32767, 32768]
    return values


def _save(image: Image.Image, path) -> str:
    image.save(path)
    return str(path)


def _eight_bit_files(tmp_path) -> dict:
    """8-bit files of several PIL modes: {mode the file opens as: path}."""
    rgb = _photo()
    rgba = np.dstack([rgb, np.arange(rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]) % 256])
    files = {
        "RGB": _save(Image.fromarray(rgb), tmp_path / "rgb.png"),
        "L": _save(Image.fromarray(rgb[:, :, 1]), tmp_path / "l.png"),
        "P": _save(Image.fromarray(rgb).quantize(64), tmp_path / "p.png"),
        "RGBA": _save(Image.fromarray(rgba.astype(np.uint8)), tmp_path / "rgba.png"),
        "1": _save(Image.fromarray(rgb[:, :, 0] > 128), tmp_path / "bits.png"),
        "CMYK": _save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "cmyk.jpg"),
    }
    for mode, path in files.items():
        with Image.open(path) as im:
            assert im.mode == mode  # the file really is of the mode the test is about
    return files


def _rotated_jpeg(path, height: int = 30, width: int = 40) -> str:
    """A JPEG stored ``height`` x ``width`` whose EXIF orientation (6) rotates it by 90 degrees."""
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(_photo(height, width, seed=5)).save(path, exif=exif)
    return str(path)


def _float_tiff(path) -> str:
    values = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    return _save(Image.fromarray(values), path)


def _int32_tiff(path, values: np.ndarray) -> str:
    path = _save(Image.fromarray(values.astype(np.int32)), path)
    with Image.open(path) as im:
        assert im.mode == "I"
    return path


# --- read_image ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_8bit_images_are_read_as_detectron2_reads_them(tmp_path, fmt):
    files = _eight_bit_files(tmp_path)
    files["EXIF-rotated"] = _rotated_jpeg(tmp_path / "rotated.jpg")
    for mode, path in files.items():
        expected = d2_utils.read_image(path, format=fmt)
        got = read_image(path, format=fmt)
        assert got.dtype == expected.dtype == np.uint8, mode
        assert got.shape == expected.shape, mode
        assert np.array_equal(got, expected), mode
    assert read_image(files["EXIF-rotated"], fmt).shape[:2] == (40, 30)  # rotated


def test_rgb_is_held_once_bgr_is_a_reversed_view(tmp_path):
    path = _eight_bit_files(tmp_path)["RGB"]
    rgb = read_image(path, "RGB")
    bgr = read_image(path, "BGR")
    assert rgb.flags.c_contiguous
    assert not bgr.flags.c_contiguous and bgr[:, :, ::-1].flags.c_contiguous  # a view, no copy
    assert np.array_equal(bgr, rgb[:, :, ::-1])


def _sixteen_bit_files(tmp_path, values: np.ndarray) -> dict:
    """The same 16-bit values in the 16-bit PIL modes: {mode the file opens as: path}."""
    files = {
        "I;16": _save(Image.fromarray(values), tmp_path / "grey16.png"),
        "I;16B": _save(
            Image.frombytes("I;16B", values.shape[::-1], values.astype(">u2").tobytes()),
            tmp_path / "grey16b.tif",
        ),
        "I": _int32_tiff(tmp_path / "grey32.tif", values),
    }
    for mode, path in files.items():
        with Image.open(path) as im:
            assert im.mode == mode
    return files


@pytest.mark.parametrize("fmt", FORMATS)
def test_16bit_greyscale_maps_the_full_range_to_8bit(tmp_path, fmt):
    values = _sixteen_bit_values()
    expected = _expected_8bit(values)
    assert expected.min() == 0 and expected.max() == 255 and expected.flat[2:4].tolist() == [0, 1]
    for mode, path in _sixteen_bit_files(tmp_path, values).items():
        got = read_image(path, format=fmt)
        assert got.dtype == np.uint8, mode
        assert got.shape == (30, 40, 1 if fmt == "L" else 3), mode
        for channel in range(got.shape[2]):  # greyscale: every channel alike
            assert np.array_equal(got[:, :, channel], expected), (mode, channel)


def test_16bit_values_v_times_257_read_as_the_8bit_image_v(tmp_path):
    """Small values stay small (no contrast stretch), and v * 257 is exactly v: the 16-bit copy
    of an 8-bit picture reads as the 8-bit picture (PIL's own conversion makes it white)."""
    grey = _photo()[:, :, 0]
    eight = _save(Image.fromarray(grey), tmp_path / "grey8.png")
    sixteen = _save(Image.fromarray(grey.astype(np.uint16) * 257), tmp_path / "grey16.png")
    for fmt in FORMATS:
        assert np.array_equal(read_image(sixteen, fmt), d2_utils.read_image(eight, fmt))
    clipped = d2_utils.read_image(sixteen, "L")[:, :, 0]  # the bug this reader fixes: white
    assert (clipped[grey > 0] == 255).all() and (grey > 0).mean() > 0.9

    small = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) % 1000  # 0..999
    path = _save(Image.fromarray(small), tmp_path / "dark16.png")
    assert np.array_equal(read_image(path, "L")[:, :, 0], _expected_8bit(small))
    assert read_image(path, "L").max() == 4  # round(999 * 255 / 65535)


def test_float_and_out_of_range_integer_images_are_refused(tmp_path):
    path = _float_tiff(tmp_path / "float.tif")
    with pytest.raises(UnsupportedImageModeError) as e:
        read_image(path)
    assert isinstance(e.value, ValueError)  # caught where PIL's errors for bad files are
    message = str(e.value)
    assert path in message and "'F'" in message and "convert it to 8-bit" in message

    for name, values in [("negative", np.full((4, 5), -1)), ("large", np.full((4, 5), 70000))]:
        path = _int32_tiff(tmp_path / f"{name}.tif", values)
        with pytest.raises(UnsupportedImageModeError, match=r"'I'.*outside 0\.\.65535") as e:
            read_image(path)
        assert path in str(e.value)


def test_broken_files_raise_pil_errors(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3)).astype(np.uint8)
    _save(Image.fromarray(noise), tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(OSError, match="truncated"):
        read_image(str(truncated))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(OSError, match="cannot identify image file"):
        read_image(str(text))
    with pytest.raises(FileNotFoundError):
        read_image(str(tmp_path / "missing.png"))


def _bare_predictor(image_format: str = "BGR") -> model_zoo.LazyPredictor:
    """A LazyPredictor whose model is never run (for :meth:`LazyPredictor.read`)."""
    cfg = OmegaConf.create({"dataloader": {"test": {"mapper": {"image_format": image_format}}}})
    return model_zoo.LazyPredictor(cfg, torch.nn.Linear(1, 1))


def test_lazy_predictor_reads_with_the_new_reader(tmp_path):
    values = _sixteen_bit_values()
    path = _save(Image.fromarray(values), tmp_path / "grey16.png")
    for fmt in ("BGR", "RGB"):
        image = _bare_predictor(fmt).read(path)
        assert np.array_equal(image, np.repeat(_expected_8bit(values)[:, :, None], 3, axis=2))
    rgb_path = _eight_bit_files(tmp_path)["RGB"]
    bgr = _bare_predictor("BGR").read(rgb_path)
    assert np.array_equal(bgr, d2_utils.read_image(rgb_path, "BGR"))
    assert bgr[:, :, ::-1].flags.c_contiguous  # held once: BGR is a view of the RGB array
    float_path = _float_tiff(tmp_path / "float.tif")
    with pytest.raises(RuntimeError, match=r"Cannot read image .*float\.tif.*'F'"):
        _bare_predictor().read(float_path)


# --- image_file_problem --------------------------------------------------------------------------


def test_image_file_problem_is_none_for_readable_files(tmp_path, monkeypatch):
    files = list(_eight_bit_files(tmp_path).values())
    files += list(_sixteen_bit_files(tmp_path, _sixteen_bit_values()).values())
    rotated = _rotated_jpeg(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[274] = 8
    rotated_png = tmp_path / "rotated.png"
    Image.fromarray(_photo()).save(rotated_png, exif=exif)

    def no_decoding(self):
        raise AssertionError("image_file_problem decoded the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)  # header only
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "load", no_decoding)
    for path in files:
        assert image_file_problem(path) is None, path
        assert image_file_problem(path, expected_size=(30, 40)) is None, path
    # size as detectron2's check_image_size sees it: EXIF orientation applied
    assert image_file_problem(rotated, expected_size=(40, 30)) is None
    assert image_file_problem(str(rotated_png), expected_size=(40, 30)) is None
    monkeypatch.undo()
    for path in (rotated, str(rotated_png)):
        d2_utils.check_image_size({"height": 40, "width": 30}, d2_utils.read_image(path, "BGR"))


def test_image_file_problem_sentences(tmp_path):
    missing = str(tmp_path / "missing.jpg")
    assert image_file_problem(missing) == f"Image file {missing!r} does not exist."
    assert "is not a file" in image_file_problem(str(tmp_path))

    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert image_file_problem(str(text)) == f"{str(text)!r} is not an image PIL can open."
    png = bytearray(Path(_eight_bit_files(tmp_path)["RGB"]).read_bytes())
    png[18] ^= 0xFF  # the header's width: its checksum no longer matches
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(png))
    problem = image_file_problem(str(corrupt))
    assert str(corrupt) in problem and "not an image PIL can open" in problem

    float_path = _float_tiff(tmp_path / "float.tif")
    problem = image_file_problem(float_path)
    assert float_path in problem and "'F'" in problem and "32-bit floating point" in problem

    path = _save(Image.fromarray(_photo()), tmp_path / "photo.png")
    assert image_file_problem(path, expected_size=(40, 30)) == (
        f"Image {path!r} is 30x40 (height x width, EXIF orientation applied) but the "
        "annotations give 40x30."
    )
    rotated = _rotated_jpeg(tmp_path / "rotated.jpg")  # stored 30x40, seen 40x30
    assert "is 40x30" in image_file_problem(rotated, expected_size=(30, 40))
    with pytest.raises(d2_utils.SizeMismatchError):  # detectron2 agrees: that size is wrong
        d2_utils.check_image_size({"height": 30, "width": 40}, d2_utils.read_image(rotated))


# --- RobustDatasetMapper -------------------------------------------------------------------------


def _train_augmentations():
    return [
        T.ResizeShortestEdge((64, 80, 96, 112), sample_style="choice", max_size=160),
        T.RandomFlip(horizontal=True),
    ]


def _map_seeded(mapper, dataset_dict: dict, seed: int) -> dict:
    """``mapper(dataset_dict)`` with numpy's and python's RNG seeded (the random resize / flip)."""
    np.random.seed(seed)
    random.seed(seed)
    return mapper(dataset_dict)


def _assert_same_mapped(a: dict, b: dict):
    """Two mapped dicts are the same: keys, image tensors, instances and the other values."""
    assert a.keys() == b.keys()
    assert a["image"].dtype == b["image"].dtype and torch.equal(a["image"], b["image"])
    for key in a.keys() - {"image", "instances"}:
        assert a[key] == b[key], key
    if "instances" in a:
        ia, ib = a["instances"], b["instances"]
        assert ia.image_size == ib.image_size and ia.get_fields().keys() == ib.get_fields().keys()
        assert torch.equal(ia.gt_boxes.tensor, ib.gt_boxes.tensor)
        assert torch.equal(ia.gt_classes, ib.gt_classes)


@pytest.mark.parametrize("image_format", FORMATS)
def test_mapper_gives_detectron2s_output_for_8bit_images(mini_lvis_root, image_format):
    dicts = [d for d in DatasetCatalog.get("mini_lvis_v1_train") if d["annotations"]][:4]
    kwargs = {"augmentations": _train_augmentations(), "image_format": image_format}
    sizes = set()
    for seed, d in enumerate(dicts * 2):
        expected = _map_seeded(DatasetMapper(is_train=True, **kwargs), d, seed)
        got = _map_seeded(RobustDatasetMapper(is_train=True, **kwargs), d, seed)
        _assert_same_mapped(got, expected)
        assert "annotations" not in got and len(got["instances"]) > 0
        assert got["image"].shape[0] == (1 if image_format == "L" else 3)
        sizes.add(tuple(got["image"].shape[1:]))
    assert len(sizes) > 1  # the random resize drew several sizes
    assert "annotations" in dicts[0]  # the dataset's dicts are not modified

    kwargs = {"augmentations": [T.ResizeShortestEdge(96, 128)], "image_format": image_format}
    for d in DatasetCatalog.get("mini_lvis_v1_val")[:3]:
        expected = DatasetMapper(is_train=False, **kwargs)(d)
        got = RobustDatasetMapper(is_train=False, **kwargs)(d)
        _assert_same_mapped(got, expected)
        assert "annotations" not in got and "instances" not in got


def _record(path: str, height: int, width: int) -> dict:
    box = [2.0, 3.0, 0.5 * width, 0.6 * height]
    annotation = {"bbox": box, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0}
    return {
        "file_name": path,
        "height": height,
        "width": width,
        "image_id": 7,
        "annotations": [annotation],
    }


def test_mapper_maps_a_16bit_image_to_the_scaled_tensor(tmp_path):
    values = _sixteen_bit_values()
    expected8 = _expected_8bit(values)
    sixteen = _save(Image.fromarray(values), tmp_path / "grey16.png")
    eight = _save(Image.fromarray(expected8), tmp_path / "grey8.png")

    plain = RobustDatasetMapper(is_train=False, augmentations=[], image_format="BGR")
    image = plain(_record(sixteen, 30, 40))["image"]
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    for channel in image:
        assert np.array_equal(channel.numpy(), expected8)

    # augmented as detectron2 augments the 8-bit image with those values
    kwargs = {"is_train": True, "augmentations": _train_augmentations(), "image_format": "BGR"}
    for seed in range(4):
        got = _map_seeded(RobustDatasetMapper(**kwargs), _record(sixteen, 30, 40), seed)
        expected = _map_seeded(DatasetMapper(**kwargs), _record(eight, 30, 40), seed)
        _assert_same_mapped({**got, "file_name": None}, {**expected, "file_name": None})


def test_mapper_refuses_a_float_image_like_an_unreadable_one(tmp_path, caplog):
    record = _record(_float_tiff(tmp_path / "float.tif"), 30, 40)
    train = RobustDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    with caplog.at_level("WARNING"):
        assert train(dict(record)) is None
    assert "float.tif" in caplog.text and "'F'" in caplog.text
    test = RobustDatasetMapper(is_train=False, augmentations=[], image_format="BGR")
    with pytest.raises(RuntimeError, match=r"Cannot read image .*float\.tif.*'F'"):
        test(dict(record))
    # a size other than the annotation's is still an unreadable image (detectron2's check)
    photo = _save(Image.fromarray(_photo()), tmp_path / "photo.png")
    with pytest.raises(RuntimeError, match="Mismatched image shape"):
        test(_record(photo, 40, 30))


def test_mapper_refuses_semantic_segmentation_dicts(tmp_path):
    """A label map must not be rescaled like a picture: this mapper is for detection only."""
    record = _record(_save(Image.fromarray(_photo()), tmp_path / "photo.png"), 30, 40)
    record["sem_seg_file_name"] = str(tmp_path / "labels.png")
    for is_train in (True, False):
        mapper = RobustDatasetMapper(is_train=is_train, augmentations=[], image_format="BGR")
        with pytest.raises(NotImplementedError, match="labels.png"):
            mapper(record)


# --- tools/predict.py ----------------------------------------------------------------------------


def test_predict_reads_a_16bit_png_as_its_8bit_picture(tmp_path, mini_lvis_root):
    """End to end: the detections on a 16-bit PNG of values v * 257 are those on the 8-bit PNG
    of values v, not those on a white picture (what PIL's conversion made of it); a float image
    is listed under ``failed`` with its mode, and the exit status is 1."""
    config = write_tiny_config(tmp_path)
    model = randomize_(model_zoo.get(config, device="cpu"), seed=21).eval()
    with torch.no_grad():  # a few confident boxes
        model.head.cls_score.bias[3::10] = 2.0
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")

    folder = tmp_path / "images"
    folder.mkdir()
    photo = DatasetCatalog.get("mini_lvis_v1_val")[0]["file_name"]
    with Image.open(photo) as im:
        grey = np.asarray(im.convert("L"))
    _save(Image.fromarray(grey), folder / "grey8.png")
    _save(Image.fromarray(grey.astype(np.uint16) * 257), folder / "grey16.png")
    _save(Image.fromarray(np.full_like(grey, 255)), folder / "white.png")
    _float_tiff(folder / "float.tif")

    out = tmp_path / "out"
    with one_torch_thread(), pytest.raises(SystemExit, match="1 of 4 images could not be read"):
        run_tool("predict").main(
            ["--config-file", config, "--checkpoint", str(tmp_path / "model_final.pth")]
            + ["--input", str(folder), "--output", str(out), "--device", "cpu"]
        )
    result = json.loads((out / "predictions.json").read_text())
    by_name = {os.path.basename(r["file_name"]): r for r in result["images"]}
    assert sorted(by_name) == ["grey16.png", "grey8.png", "white.png"]
    assert len(by_name["grey8.png"]["instances"]) > 0
    assert by_name["grey16.png"]["instances"] == by_name["grey8.png"]["instances"]
    assert by_name["grey16.png"]["instances"] != by_name["white.png"]["instances"]
    (failed,) = result["failed"]
    assert failed["file_name"].endswith("float.tif") and "'F'" in failed["error"]
