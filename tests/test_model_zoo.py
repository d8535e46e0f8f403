"""efl_d2.model_zoo: config lookup, the weights catalog, and save -> get(trained=True) round trips."""

import os

import pytest
import torch
from _tiny_zoo import (
    assert_same_detections,
    image_batch,
    one_torch_thread,
    randomize_,
    write_tiny_config,
)
from detectron2.checkpoint import DetectionCheckpointer
from omegaconf import OmegaConf

from efl_d2 import model_zoo
from efl_d2.checkpoint import CheckpointMismatchError
from efl_d2.model_zoo.model_zoo import CheckpointEntry, _ModelZooUrls
from efl_d2.official import (
    OFFICIAL_EFL_R50_URL,
    OfficialATSS,
    OfficialLastLevelP6P7,
    OpenCVResizeShortestEdge,
    check_official_architecture,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_torch_thread():
        yield


def test_configs_come_from_the_repository_tree():
    assert os.path.samefile(model_zoo.configs_root(), os.path.join(REPO, "configs"))
    path = model_zoo.get_config_file("mini_lvis/fcos_R18.py")
    assert os.path.samefile(path, os.path.join(REPO, "configs", "mini_lvis", "fcos_R18.py"))
    assert model_zoo.get_config_file("mini_lvis/fcos_R18") == path  # extension optional
    assert "mini_lvis/fcos_R18.py" in model_zoo.list_configs()
    assert "common/models/atss.py" in model_zoo.list_configs()
    cfg = model_zoo.get_config("mini_lvis/fcos_R18.py")
    assert cfg.model.num_classes == 40 and cfg.train.max_iter == 300


def test_unknown_config_suggests_close_names():
    with pytest.raises(RuntimeError) as e:
        model_zoo.get_config_file("mini_lvis/fcos_R19.py")
    assert "mini_lvis/fcos_R18.py" in str(e.value) and "Did you mean" in str(e.value)


def test_catalog_is_keyed_without_extension_and_honest():
    for key in (model_zoo.OFFICIAL_EFL_R50_CONFIG, model_zoo.OFFICIAL_EFL_R50_CONFIG + ".py"):
        assert model_zoo.get_checkpoint_url(key) == OFFICIAL_EFL_R50_URL
    entry = model_zoo.get_checkpoint_entry(model_zoo.OFFICIAL_EFL_R50_CONFIG)
    assert entry.source == "official" and "converted" in entry.note
    for key in _ModelZooUrls.CONFIG_PATH_TO_CHECKPOINT:  # every entry names an existing config
        assert os.path.isfile(model_zoo.get_config_file(key)), key
    with pytest.raises(RuntimeError, match="no released weights"):
        model_zoo.get_checkpoint_url("mini_lvis/fcos_R18.py")
    with pytest.raises(RuntimeError, match="no released weights"):
        model_zoo.get("mini_lvis/fcos_R18.py", trained=True, device="cpu")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny config, a saved checkpoint of a randomised model, and its catalog entry."""
    config = write_tiny_config(tmp_path)
    source = randomize_(model_zoo.get(config, device="cpu"), seed=5)
    DetectionCheckpointer(source, str(tmp_path)).save("model_final")
    checkpoint = str(tmp_path / "model_final.pth")
    catalog = dict(_ModelZooUrls.CONFIG_PATH_TO_CHECKPOINT)
    catalog[config[: -len(".py")]] = CheckpointEntry(url=checkpoint, source="efl_d2")
    monkeypatch.setattr(_ModelZooUrls, "CONFIG_PATH_TO_CHECKPOINT", catalog)
    return config, source.eval(), checkpoint


def test_save_then_get_trained_gives_identical_predictions(tiny):
    config, source, checkpoint = tiny
    assert model_zoo.get_checkpoint_url(config) == checkpoint
    assert model_zoo.get_config(config, trained=True).train.init_checkpoint == checkpoint
    inputs = image_batch(seed=1)
    with torch.no_grad():
        expected = source(inputs)[0]["instances"]
    for model in (
        model_zoo.get(config, trained=True, device="cpu"),
        model_zoo.get(config, weights=checkpoint, device="cpu"),
    ):
        assert not model.training  # ready to run
        with torch.no_grad():
            assert_same_detections(model(inputs)[0]["instances"], expected, atol=0)
        for k, v in source.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k  # EFL statistics included
    untrained = model_zoo.get(config, device="cpu")  # no weights: a different model
    assert not torch.equal(untrained.head.cls_score.weight, source.head.cls_score.weight)


def test_trained_checkpoint_with_other_class_count_is_a_clear_error(tiny, tmp_path):
    _, _, checkpoint = tiny
    other = write_tiny_config(tmp_path, "five.py", num_classes=5)
    with pytest.raises(CheckpointMismatchError) as e:
        model_zoo.get(other, weights=checkpoint, device="cpu")
    msg = str(e.value)
    assert "head.cls_score.weight" in msg and "cls_loss.pos_neg" in msg
    assert "set model.num_classes" in msg and "10 classes" in msg


def test_strict_load_reports_missing_keys_detectron2_only_warns(tiny, tmp_path):
    config, source, _ = tiny
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("head.quality_pred")}
    path = str(tmp_path / "partial.pth")
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointMismatchError, match="head.quality_pred.weight"):
        model_zoo.get(config, weights=path, device="cpu")
    model = model_zoo.get(config, device="cpu")
    DetectionCheckpointer(model).load(path)  # detectron2's behaviour: warn and keep the init


def test_official_catalog_entry_switches_to_the_official_architecture(tiny, monkeypatch):
    config, _, _ = tiny
    catalog = dict(_ModelZooUrls.CONFIG_PATH_TO_CHECKPOINT)
    catalog[config[: -len(".py")]] = CheckpointEntry(url="file.pth", source="official")
    monkeypatch.setattr(_ModelZooUrls, "CONFIG_PATH_TO_CHECKPOINT", catalog)
    cfg = model_zoo.get_config(config, trained=True)
    assert cfg.train.init_checkpoint == "file.pth"
    # torchvision's to_tensor + normalize: /255, then ImageNet mean/std on the [0, 1] scale
    assert list(cfg.model.pixel_mean) == [0.485, 0.456, 0.406]
    assert list(cfg.model.pixel_std) == [0.229, 0.224, 0.225] and cfg.model.pixel_divisor == 255
    assert OmegaConf.select(cfg, "dataloader.test.mapper.image_format") == "RGB"
    # the official test pipeline around the network
    assert cfg.dataloader.test.mapper.augmentations[0]._target_ is OpenCVResizeShortestEdge
    assert cfg.model.size_divisibility == 64
    assert cfg.model._target_ is OfficialATSS
    assert cfg.model.box_convention == "official" and cfg.model.nms_convention == "official"
    model = model_zoo.build_model(cfg, device="cpu")  # no weights: just the architecture
    assert isinstance(model.backbone.top_block, OfficialLastLevelP6P7)
    assert check_official_architecture(model) == []
    plain = model_zoo.build_model(model_zoo.get_config(config), device="cpu")
    assert len(check_official_architecture(plain)) == 3  # P6/P7, input format, pixel mean/std


def test_lazy_predictor_matches_manual_preprocessing(tiny, mini_lvis_root):
    import numpy as np
    from detectron2.data import DatasetCatalog
    from detectron2.data import transforms as T
    from PIL import Image

    config, source, _ = tiny
    cfg = model_zoo.get_config(config)
    predictor = model_zoo.LazyPredictor(cfg, source)
    path = DatasetCatalog.get("mini_lvis_v1_val")[0]["file_name"]
    got = predictor(path)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    bgr = rgb[:, :, ::-1]
    h, w = bgr.shape[:2]
    resized = T.ResizeShortestEdge(96, 128).get_transform(bgr).apply_image(bgr)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
    with torch.no_grad():
        expected = source([{"image": tensor, "height": h, "width": w}])[0]["instances"]
    assert_same_detections(got, expected)
    assert got.image_size == (h, w)
    assert model_zoo.metadata_from_config(cfg).thing_classes[0] == "checkered_blue_square"


@pytest.mark.slow
def test_non_editable_install_ships_the_configs(tmp_path):
    """A wheel built from the checkout carries configs/ as efl_d2/model_zoo/configs, and
    model_zoo serves the configs from there when no checkout is next to the package."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "output", "datasets", "build", "*.egg-info", "__pycache__", ".devsite"
    )
    shutil.copytree(REPO, src, ignore=skip, symlinks=True)
    link = src / "efl_d2" / "model_zoo" / "configs"
    if link.is_symlink() or link.exists():  # made by an earlier install: setup.py must redo it
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("efl_d2-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"configs/{p}" for p in model_zoo.list_configs()} | {"configs/README.md"}
    shipped = {n.split("efl_d2/model_zoo/", 1)[1] for n in names if "/model_zoo/configs/" in n}
    assert expected <= shipped, sorted(expected - shipped)

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from efl_d2 import model_zoo; root = model_zoo.configs_root(); "
        "cfg = model_zoo.get_config('LVIS/atss_improved_R50_2x_efl.py'); "
        "print(root, cfg.model.cls_loss._target_.__name__)"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    root, target = proc.stdout.split()
    assert root == str(site / "efl_d2" / "model_zoo" / "configs") and target == "EqualizedFocalLoss"
