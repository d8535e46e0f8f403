"""Foreign checkpoints through EFLCheckpointer: torchvision ResNet and the official EFL release.

Every source checkpoint is built here: a torchvision ResNet, and official-format files made from a
tiny efl_d2 ATSS with the inverse key mapping of tests/_official_checkpoints.py (written from the
documented official names, docs/official_checkpoint_format.md §2), in every documented top-level
layout (§1).
"""

import argparse
import os
import pickle

import pytest
import torch
import torchvision
from _official_checkpoints import official_state_dict, save_official
from _tiny_zoo import (
    assert_same_detections,
    image_batch,
    one_torch_thread,
    randomize_,
    run_tool,
    write_tiny_config,
)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.modeling.backbone import BasicStem, ResNet
from torch.nn import functional as F

from efl_d2 import model_zoo
from efl_d2.checkpoint import CheckpointMismatchError, EFLCheckpointer
from efl_d2.official import (
    OFFICIAL_EFL_R50_URL,
    OfficialLastLevelP6P7,
    check_official_architecture,
    use_official_architecture,
)

REPO = os.path.join(os.path.dirname(__file__), "..")


# --------------------------------------------------------------------------- torchvision


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_torch_thread():
        yield


def _torchvision_resnet(depth, seed):
    torch.manual_seed(seed)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return net


def _torchvision_features(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer3(net.layer2(net.layer1(x)))
    return net.layer4(x)


def _d2_resnet18():
    return instantiate(
        L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=18, norm="FrozenBN"),
            out_features=["res5"],
        )
    ).eval()


@pytest.fixture(scope="module")
def torchvision_r18(tmp_path_factory):
    net = _torchvision_resnet(18, seed=1)
    path = str(tmp_path_factory.mktemp("tv") / "resnet18-tv.pth")
    torch.save(net.state_dict(), path)
    return net, path


def test_torchvision_converted_file_matches_source_outputs(torchvision_r18, tmp_path):
    net, path = torchvision_r18
    tool = run_tool("convert_torchvision_to_d2")
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    expected = _torchvision_features(net, x)
    for out_name in ("r18.pkl", "r18.pth"):
        out = str(tmp_path / out_name)
        tool.main([path, out])
        # detectron2's own checkpointer reads it (model-zoo .pkl or tensor-only .pth) ...
        d2net = _d2_resnet18()
        DetectionCheckpointer(d2net).load(out)
        torch.testing.assert_close(d2net(x)["res5"], expected, atol=1e-4, rtol=1e-4)
        # ... and so does EFLCheckpointer, placing it exactly (strict within the ResNet).
        d2net = _d2_resnet18()
        EFLCheckpointer(d2net).load(out)
        torch.testing.assert_close(d2net(x)["res5"], expected, atol=1e-4, rtol=1e-4)
    with open(str(tmp_path / "r18.pkl"), "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "torchvision" and data["matching_heuristics"] is True
    assert "fc.weight" not in data["model"] and "stem.conv1.norm.running_var" in data["model"]


def test_detector_init_checkpoint_can_be_a_raw_torchvision_file(torchvision_r18, tmp_path):
    net, path = torchvision_r18
    cfg = model_zoo.get_config(write_tiny_config(tmp_path))
    model = instantiate(cfg.model).eval()
    head_before = model.head.cls_score.weight.clone()
    EFLCheckpointer(model).load(path)  # what train.init_checkpoint=<torchvision .pth> does
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    got = model.backbone.bottom_up(x)["res5"]
    torch.testing.assert_close(got, _torchvision_features(net, x), atol=1e-4, rtol=1e-4)
    assert torch.equal(model.head.cls_score.weight, head_before)  # the rest keeps its init


def test_torchvision_depth_mismatch_is_a_clear_error(tmp_path):
    path = str(tmp_path / "resnet34.pth")
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    model = _d2_resnet18()
    with pytest.raises(CheckpointMismatchError) as e:
        EFLCheckpointer(model).load(path)
    msg = str(e.value)
    assert "torchvision ResNet checkpoint" in msg and "not in the model" in msg
    assert "res2.2.conv1.weight" in msg  # ResNet-34 has 3 blocks in res2, ResNet-18 two


# --------------------------------------------------------------------------- official format


def official_cfg(tmp_path, name="tiny.py", **kwargs):
    cfg = model_zoo.get_config(write_tiny_config(tmp_path, name, **kwargs))
    return use_official_architecture(cfg)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny ATSS in the official architecture with random weights, and its test outputs."""
    tmp = tmp_path_factory.mktemp("official")
    cfg = official_cfg(tmp)
    model = randomize_(instantiate(cfg.model), seed=3).eval()
    assert model.backbone.top_block.lateral is model.backbone.fpn_lateral5  # one shared conv
    inputs = image_batch(seed=4)
    with torch.no_grad():
        outputs = model(inputs)[0]["instances"]
        features = model.backbone(model.preprocess_image(inputs).tensor)
    return {
        "tmp": tmp,
        "cfg": cfg,
        "model": model,
        "inputs": inputs,
        "outputs": outputs,
        "features": features,
    }


def _fresh(cfg, seed=9):
    torch.manual_seed(seed)
    return instantiate(cfg.model).eval()


@pytest.mark.parametrize(
    "layout,module_prefix,aliases",
    [("model", True, True), ("state_dict", False, True), ("bare", False, False)],
)
def test_official_checkpoint_loads_to_identical_outputs(
    source, tmp_path, layout, module_prefix, aliases
):
    sd = official_state_dict(source["model"], aliases=aliases)
    path = save_official(sd, str(tmp_path / "official.pth"), layout, module_prefix)
    model = _fresh(source["cfg"])
    EFLCheckpointer(model).load(path)
    assert check_official_architecture(model) == []
    with torch.no_grad():
        got = model(source["inputs"])[0]["instances"]
    assert_same_detections(got, source["outputs"])
    torch.testing.assert_close(model.cls_loss.pos_neg, source["model"].cls_loss.pos_neg)


def test_official_p6_p7_dataflow(source):
    """P6 = p6_conv(c5_lateral(C5)), P7 = p7_conv(P6) without ReLU, from the official tensors."""
    sd = official_state_dict(source["model"])
    model = _fresh(source["cfg"])
    EFLCheckpointer(model).load(_save_tmp(source, sd))
    x = model.preprocess_image(source["inputs"]).tensor
    with torch.no_grad():
        c5 = model.backbone.bottom_up(x)["res5"]
        feats = model.backbone(x)
    lateral = F.conv2d(c5, sd["neck.c5_lateral.weight"], sd["neck.c5_lateral.bias"])
    p6 = F.conv2d(lateral, sd["neck.p6_conv.weight"], sd["neck.p6_conv.bias"], stride=2, padding=1)
    p7 = F.conv2d(p6, sd["neck.p7_conv.weight"], sd["neck.p7_conv.bias"], stride=2, padding=1)
    torch.testing.assert_close(feats["p6"], p6, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(feats["p7"], p7, atol=1e-4, rtol=1e-4)
    assert isinstance(model.backbone.top_block, OfficialLastLevelP6P7)


def _save_tmp(source, sd, name="o.pth"):
    return save_official(sd, str(source["tmp"] / name), "model", True)


def test_reversed_anchor_order_gets_permuted_channels(source, tmp_path):
    """A model listing its anchors as [8s, 6s] gets the official (6s first) channels swapped,
    so the detections are the same as with the official order."""
    sd = official_state_dict(source["model"])
    cfg = official_cfg(tmp_path, "reversed.py", anchor_scales=(8, 6))
    model = _fresh(cfg)
    EFLCheckpointer(model).load(_save_tmp(source, sd, "rev.pth"))
    with torch.no_grad():
        got = model(source["inputs"])[0]["instances"]
    assert_same_detections(got, source["outputs"])
    c = source["model"].num_classes
    torch.testing.assert_close(
        model.head.cls_score.bias[:c], sd["roi_head.cls_subnet_pred.bias"][c:]
    )


def test_class_major_layout(source):
    sd = official_state_dict(source["model"], class_major=True)
    path = _save_tmp(source, sd, "class_major.pth")
    model = _fresh(source["cfg"])
    EFLCheckpointer(model, official_cls_layout="class_major").load(path)
    with torch.no_grad():
        got = model(source["inputs"])[0]["instances"]
    assert_same_detections(got, source["outputs"])
    wrong = _fresh(source["cfg"])
    EFLCheckpointer(wrong).load(path)  # shapes equal: only the declared layout can tell
    assert not torch.equal(wrong.head.cls_score.weight, model.head.cls_score.weight)


def test_convert_tool_and_config_check(source, tmp_path, capsys):
    sd = official_state_dict(source["model"])
    src = save_official(sd, str(tmp_path / "official.pth"), "state_dict", True)
    out = str(tmp_path / "converted.pth")
    config = write_tiny_config(tmp_path)
    data = run_tool("convert_official_to_d2").main(
        [src, out, "--config-file", config, "--official-architecture"]
    )
    assert data["efl_d2_conversion"]["num_classes"] == 10
    assert data["efl_d2_conversion"]["num_anchors"] == 2
    assert data["efl_d2_conversion"]["layout"] == "state_dict"
    assert data["efl_d2_conversion"]["module_prefix"] is True
    assert data["architecture_differences"] == []
    assert "all keys and shapes match" in capsys.readouterr().out
    # the converted file is tensors-only and loads through the model zoo API
    model = model_zoo.build_model(source["cfg"], weights=out, device="cpu")
    with torch.no_grad():
        assert_same_detections(model(source["inputs"])[0]["instances"], source["outputs"])
    # into efl_d2's own architecture (P6 from P5, BGR normalisation) it loads, with the
    # differences reported
    plain = model_zoo.get(config, weights=out, device="cpu")
    problems = check_official_architecture(plain)
    assert any("P6/P7" in p for p in problems) and any("pixel mean" in p for p in problems)


def test_wrong_class_count_lists_mismatches(source, tmp_path):
    path = _save_tmp(source, official_state_dict(source["model"]), "ten.pth")
    model = _fresh(official_cfg(tmp_path, "five.py", num_classes=5))
    with pytest.raises(CheckpointMismatchError) as e:
        EFLCheckpointer(model).load(path)
    msg = str(e.value)
    assert "head.cls_score.weight: [20, 64, 3, 3] vs [10, 64, 3, 3]" in msg
    assert "cls_loss.pos_neg" in msg
    assert "2 anchors x 10 classes" in msg and "model.num_classes" in msg


def test_missing_and_unknown_keys_are_listed(source):
    sd = official_state_dict(source["model"])
    del sd["roi_head.box_subnet.3.weight"]
    model = _fresh(source["cfg"])
    with pytest.raises(CheckpointMismatchError) as e:
        EFLCheckpointer(model).load(_save_tmp(source, sd, "missing.pth"))
    assert "missing in the checkpoint" in str(e.value)
    assert "head.bbox_subnet.3.weight" in str(e.value)

    sd = official_state_dict(source["model"])
    sd["roi_head.extra_pred.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match="roi_head.extra_pred.weight"):
        EFLCheckpointer(_fresh(source["cfg"])).load(_save_tmp(source, sd, "unknown.pth"))


def test_non_tensor_objects_need_explicit_trust(source):
    sd = official_state_dict(source["model"])
    path = str(source["tmp"] / "pickled.pth")
    torch.save({"model": sd, "args": argparse.Namespace(lr=0.02)}, path)
    with pytest.raises(RuntimeError, match="allow_unsafe_pickle"):
        EFLCheckpointer(_fresh(source["cfg"])).load(path)
    model = _fresh(source["cfg"])
    EFLCheckpointer(model, allow_unsafe_pickle=True).load(path)
    with torch.no_grad():
        assert_same_detections(model(source["inputs"])[0]["instances"], source["outputs"])
    # the converter tool reads files as the checkpointer does
    tool, out = run_tool("convert_official_to_d2"), str(source["tmp"] / "converted.pth")
    with pytest.raises(SystemExit, match="--trust-pickle"):
        tool.main([path, out])
    assert tool.main([path, out, "--trust-pickle"])["efl_d2_conversion"]["num_classes"] == 10


def test_documented_r50_layout_loads_into_the_paper_model():
    """All 373 documented keys/shapes of efl_improved_baseline_r50.pth (0.1.0 naming, 1203
    classes) map exactly onto the model of the catalog row that points at that file."""
    shapes = {}

    def bn(prefix, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{leaf}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["backbone.conv1.weight"] = (64, 3, 7, 7)
    bn("backbone.bn1", 64)
    shapes["backbone.layer0.0.weight"] = (64, 3, 7, 7)
    bn("backbone.layer0.1", 64)
    cin = 64
    for i, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        cout = 4 * width
        for b in range(blocks):
            p = f"backbone.layer{i}.{b}"
            shapes[f"{p}.conv1.weight"] = (width, cin if b == 0 else cout, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn2", width)
            shapes[f"{p}.conv3.weight"] = (cout, width, 1, 1)
            bn(f"{p}.bn3", cout)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                bn(f"{p}.downsample.1", cout)
        cin = cout
    for level, c in zip((3, 4, 5), (512, 1024, 2048)):
        shapes[f"neck.c{level}_lateral.weight"], shapes[f"neck.c{level}_lateral.bias"] = (
            (256, c, 1, 1),
            (256,),
        )
        shapes[f"neck.p{level}_conv.weight"], shapes[f"neck.p{level}_conv.bias"] = (
            (256, 256, 3, 3),
            (256,),
        )
    for level in (6, 7):
        shapes[f"neck.p{level}_conv.weight"], shapes[f"neck.p{level}_conv.bias"] = (
            (256, 256, 3, 3),
            (256,),
        )
    for tower in ("cls_subnet", "box_subnet"):
        for i in (0, 3, 6, 9):
            shapes[f"roi_head.{tower}.{i}.weight"] = (256, 256, 3, 3)
            shapes[f"roi_head.{tower}.{i + 1}.weight"] = (256,)
            shapes[f"roi_head.{tower}.{i + 1}.bias"] = (256,)
    for name, out in (("cls_subnet_pred", 2406), ("box_subnet_pred", 8), ("iou_pred", 2)):
        shapes[f"roi_head.{name}.weight"], shapes[f"roi_head.{name}.bias"] = (
            (out, 256, 3, 3),
            (out,),
        )
    for b in ("pos_grad", "neg_grad", "pos_neg"):
        shapes[f"post_process.cls_loss.{b}"] = (1203,)
    assert len(shapes) == 373  # the documented total

    sd = {
        k: torch.zeros(s, dtype=torch.int64 if s == () else torch.float32)
        for k, s in shapes.items()
    }
    sd["post_process.cls_loss.pos_neg"] = torch.linspace(0, 1, 1203)
    # the model zoo's catalog row for the official release (switched to the official architecture)
    cfg = model_zoo.get_config(model_zoo.OFFICIAL_EFL_R50_CONFIG, trained=True)
    assert cfg.train.init_checkpoint == OFFICIAL_EFL_R50_URL
    model = instantiate(cfg.model)
    # raises CheckpointMismatchError on any key/shape difference
    EFLCheckpointer(model).load_checkpoint_dict(sd, "documented R-50 layout")
    assert torch.equal(model.cls_loss.pos_neg, sd["post_process.cls_loss.pos_neg"])
    assert check_official_architecture(model) == []
