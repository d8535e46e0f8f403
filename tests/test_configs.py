"""Every config loads, builds and trains one step; every paper row's config has the row's knobs."""

import glob
import math
import os
import re

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import transforms as T
from detectron2.utils.events import EventStorage

from efl_d2.data import build_class_balanced_train_loader
from efl_d2.engine import apply_overrides_strict
from efl_d2.model_zoo.paper_rows import OPENIMAGES_ROWS, PAPER_ROWS
from efl_d2.modeling import ATSS
from efl_d2.official import OpenCVResizeShortestEdge

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
ALL_CONFIGS = sorted(
    os.path.relpath(p, CONFIGS)
    for d in ("LVIS", "mini_lvis", "official", "OpenImages", "mini_openimages")
    for p in glob.glob(os.path.join(CONFIGS, d, "*.py"))
)
STRIDES = (8, 16, 32, 64, 128)


def load(rel_path):
    return LazyConfig.load(os.path.join(CONFIGS, rel_path))


@pytest.mark.parametrize("rel_path", ALL_CONFIGS)
@pytest.mark.slow
def test_config_builds_and_trains_one_step(rel_path, mini_lvis_root, mini_openimages_root):
    cfg = load(rel_path)
    openimages = rel_path.startswith(("OpenImages/", "mini_openimages/"))
    augs = cfg.dataloader.train.mapper.augmentations
    resize = next(i for i, a in enumerate(augs) if "short_edge_length" in a)  # after a flip: ATSS
    apply_overrides_strict(
        cfg,
        [
            "dataloader.train.dataset.names="
            + ("mini_openimages_train" if openimages else "mini_lvis_v1_train"),
            "dataloader.train.total_batch_size=2",
            "dataloader.train.num_workers=0",
            f"dataloader.train.mapper.augmentations.{resize}.short_edge_length=[64]",
            f"dataloader.train.mapper.augmentations.{resize}.max_size=96",
            "train.init_checkpoint=''",
            "train.device=cpu",
        ],
    )
    _fit_class_statistics(cfg, rel_path)
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    instantiate(cfg.lr_multiplier)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    with EventStorage():
        losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0, losses
    total.backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _fit_class_statistics(cfg, rel_path):
    """Losses built from dataset statistics need them for the model's classes: mini-LVIS configs
    get the session's small mini-LVIS (10 classes), OpenImages ones its mini-OpenImages; LVIS's BAGS, whose instance counts need the
    LVIS json (not here), groups by Detectron2's LVIS v1 image counts instead."""
    m = cfg.model
    predictor = m.roi_heads.box_predictor if "roi_heads" in m else None
    if rel_path.startswith(("mini_lvis/", "OpenImages/", "mini_openimages/")):
        num_classes = 10
        if "openimages" in rel_path.lower():
            from detectron2.data import MetadataCatalog

            num_classes = len(MetadataCatalog.get("mini_openimages_train").thing_classes)
        if predictor is not None:
            m.roi_heads.num_classes = num_classes
        else:
            m.num_classes = num_classes
    elif predictor is not None and predictor.cls_loss and "instance_counts" in predictor.cls_loss:
        from detectron2.data.datasets.lvis_v1_category_image_count import (
            LVIS_CATEGORY_IMAGE_COUNT,
        )

        predictor.cls_loss.instance_counts = [c["image_count"] for c in LVIS_CATEGORY_IMAGE_COUNT]


def test_every_lvis_config_has_the_papers_common_settings():
    lvis = [p for p in ALL_CONFIGS if p.startswith("LVIS/")]
    assert {r.config for r in PAPER_ROWS} == set(lvis)  # no config without a row, and vice versa
    for p in lvis:
        cfg = load(p)
        m = cfg.model
        num_classes = m.roi_heads.num_classes if "roi_heads" in m else m.num_classes
        assert num_classes == 1203, p
        dets = (
            m.roi_heads.box_predictor.test_topk_per_image
            if "roi_heads" in m
            else m.max_detections_per_image
        )
        assert dets == 300, p
        assert cfg.dataloader.evaluator.max_dets_per_image == 300, p
        assert cfg.dataloader.train.dataset.names == "lvis_v1_train", p
        assert cfg.dataloader.test.dataset.names == "lvis_v1_val", p
        assert cfg.dataloader.train.total_batch_size == 16 and cfg.optimizer.lr == 0.02, p
        if cfg.train.retrain_only:  # decoupled: + 1x with CBS from the first stage's model
            assert cfg.dataloader.train._target_ is build_class_balanced_train_loader, p
            assert cfg.train.retrain_only == ["roi_heads.box_predictor.cls_score"], p
            assert cfg.train.max_iter == 90000, p
            assert cfg.lr_multiplier.scheduler.milestones == [60000, 80000, 90000], p
            depth = m.backbone.bottom_up.stages.depth
            first = f"./output/faster_rcnn_R{depth}_2x/model_final.pth"
            assert cfg.train.init_checkpoint == first, p
            continue
        assert cfg.dataloader.train.repeat_thresh == 0.001, p
        assert cfg.train.max_iter == 180000, p
        assert cfg.lr_multiplier.scheduler.milestones == [120000, 160000, 180000], p
        assert cfg.train.init_checkpoint.startswith("detectron2://ImageNetPretrained/"), p
        if "roi_heads" not in m:
            assert m.test_score_thresh == 0.0 and m.head.prior_prob == 0.001, p
        if m._target_ is ATSS:  # the official conventions that change which anchors are positive
            assert m.anchor_matcher.center_convention == "official", p
            flip, resize = cfg.dataloader.train.mapper.augmentations
            assert flip._target_ is T.RandomFlip and resize.inclusive_boxes, p
            assert resize._target_ is OpenCVResizeShortestEdge, p
    # the CPU-sized mini-LVIS configs keep Detectron2's
    mini = load("mini_lvis/atss_efl_R18.py")
    assert mini.model.anchor_matcher.get("center_convention", "detectron2") == "detectron2"


def _loss_kind(cls_loss):
    name = cls_loss._target_.__name__
    if name == "SigmoidFocalLoss":
        return "focal", 0.0
    if name == "EqualizedFocalLoss":
        return "efl", cls_loss.scale
    assert name == "EQLv2FocalLoss", name
    return "eqlv2", None


@pytest.mark.parametrize("row", PAPER_ROWS, ids=lambda r: f"T{r.table}-{r.row}")
def test_row_config_matches_the_rows_meaning(row):
    cfg = load(row.config)
    m, label = cfg.model, row.row
    warmup_iters = round(cfg.lr_multiplier.warmup_length * cfg.train.max_iter)
    depth = m.backbone.bottom_up.stages.depth
    assert depth == (101 if "R-101" in label else 50)
    if not cfg.train.retrain_only:  # decoupled rows start from the first stage (below)
        assert cfg.train.init_checkpoint.endswith(f"R-{depth}.pkl")
    two_stage = {
        "Faster R-CNN": None,
        "EQL": "EQLLoss",
        "EQLv2": "EQLv2Loss",
        "Seesaw Loss": "SeesawLoss",
        "cRT": None,
        "BAGS": "BalancedGroupSoftmaxLoss",
    }
    method = label.removeprefix("R-50 ").removeprefix("R-101 ")
    if method in two_stage:
        assert m._target_.__name__ == "GeneralizedRCNN" and m.roi_heads.mask_head is None
        predictor = m.roi_heads.box_predictor
        loss = predictor.cls_loss
        assert (loss and loss._target_.__name__) == two_stage[method], label
        # the authors' constants (Tan et al. 2020 / 2021, Wang et al. 2021)
        if method == "EQL":
            assert loss.lambda_ == 0.0011 and predictor.cls_prior_prob == 0.001
            assert loss.image_frequencies.name == "lvis_v1_train"
        if method == "EQLv2":
            assert (loss.gamma, loss.mu, loss.alpha) == (12.0, 0.8, 4.0)
        if method == "Seesaw Loss":
            seesaw = (loss.p, loss.q, loss.eps, predictor.cosine_temperature)
            assert seesaw == (0.8, 2.0, 0.01, 20.0)
        if method == "BAGS":
            assert (tuple(loss.bin_edges), loss.others_ratio) == ((10, 100, 1000), 8.0)
            assert loss.instance_counts.name == "lvis_v1_train"
        assert cfg.train.clip_grad == 0 and warmup_iters == 1000
        # decoupled (Table 2 "RFS+CBS 24+12"): the classifier alone, from the first stage
        assert bool(cfg.train.retrain_only) == (method in ("cRT", "BAGS")), label
        if cfg.train.retrain_only:
            assert cfg.train.init_checkpoint == f"./output/faster_rcnn_R{depth}_2x/model_final.pth"
        return
    kind, scale = _loss_kind(m.cls_loss)
    detector = m._target_.__name__

    if (
        row.table == 1
        or (row.table == 6 and "Baseline" not in label)
        or label.endswith("RetinaNet")
    ):
        expected = {
            "RetinaNet": "PluggableRetinaNet",
            "FCOS*": "PluggableFCOS",
            "ATSS": "ATSS",
            "PAA": "PAA",
        }
        assert (
            detector
            == expected[label.split()[-1] if label.endswith("RetinaNet") else label.split()[0]]
        )
        assert kind == ("eqlv2" if "EQLv2" in label else "efl" if "EFL" in label else "focal")
        if detector in ("PluggableRetinaNet", "PluggableFCOS"):  # trained with STS (Sec. 4.3)
            assert cfg.train.clip_grad == 35.0 and warmup_iters == 6000
        elif detector == "PAA":  # one anchor, IoU >= 0.1 candidates, 9 per level, IoU branch
            assert m.quality == "iou" and m.topk == 9 and m.score_voting
            assert m.initial_matcher.thresholds == [0.1] and m.initial_matcher.labels == [0, 1]
            assert m.anchor_generator.sizes == [[8 * s] for s in STRIDES]
            assert m.head.num_anchors == 1 and "anchor_matcher" not in m
            assert (m.box_loss_weight, m.quality_loss_weight) == (1.3, 0.5)
            assert cfg.train.clip_grad == 0 and warmup_iters == 1000
        else:  # Table 1 ATSS is the original one
            assert m.quality == "centerness" and m.anchor_matcher.topk == 9
            assert (
                m.anchor_generator.sizes == [[8 * s] for s in STRIDES] and m.head.num_anchors == 1
            )
            assert cfg.train.clip_grad == 0 and warmup_iters == 1000
        return

    # ATSS rows of Tables 2-6: the improved baseline (+ EFL), or its Table 5 ablations.
    assert detector == "ATSS"
    components = set(re.findall(r"STS|IB|IA", label)) if row.table == 5 else {"STS", "IB", "IA"}
    assert (cfg.train.clip_grad, warmup_iters) == (
        (35.0, 6000) if "STS" in components else (0.0, 1000)
    )
    assert m.quality == ("iou" if "IB" in components else "centerness")
    if "IA" in components:
        assert m.anchor_generator.sizes == [[6 * s, 8 * s] for s in STRIDES]
        assert (m.head.num_anchors, m.anchor_matcher.topk) == (2, 18)
    else:
        assert m.anchor_generator.sizes == [[8 * s] for s in STRIDES]
        assert (m.head.num_anchors, m.anchor_matcher.topk) == (1, 9)

    if row.table == 4:
        assert scale == float(label.removeprefix("s="))
    if row.table == 3:
        wf, ff = "WF" in label, "FF" in label
        if not (wf or ff):
            assert kind == "focal"
        else:
            assert kind == "efl" and scale == 8.0
            assert (
                m.cls_loss.get("weighting_factor", True),
                m.cls_loss.get("focusing_factor", True),
            ) == (wf, ff)
    if row.table in (2, 6):
        assert kind == ("focal" if "Baseline" in label and "EFL" not in label else "efl")
    if kind == "efl" and row.table != 4:
        assert scale == 8.0


def _config_imports(path: str) -> list[str]:
    """The config files that the LazyConfig file ``path`` imports (relative imports)."""
    with open(path) as f:
        text = f.read()
    out = []
    for dots, module in re.findall(r"^from (\.+)([\w.]*) import", text, re.MULTILINE):
        base = os.path.dirname(path)
        for _ in range(len(dots) - 1):
            base = os.path.dirname(base)
        out.append(os.path.join(base, *module.split(".")) + ".py")
    return out


def _ancestors(rel_path: str) -> dict[str, int]:
    """Every config file that ``rel_path`` imports, directly or not, with its import depth."""
    depth, todo = {}, [(os.path.join(CONFIGS, rel_path), 0)]
    while todo:
        path, d = todo.pop()
        for parent in _config_imports(path):
            rel = os.path.relpath(parent, CONFIGS)
            if depth.get(rel, -1) < d + 1:
                depth[rel] = d + 1
                todo.append((parent, d + 1))
    return depth


def test_main_row_is_the_root_of_the_atss_rows():
    """The main row states improved head + EFL + schedule within three imports, none of them
    another row; Baseline† and the ablations are diffs of it (they import it)."""
    main = "LVIS/atss_improved_R50_2x_efl.py"
    ancestors = _ancestors(main)
    assert max(ancestors.values()) <= 3, ancestors
    assert all(a.startswith("common/") for a in ancestors), ancestors
    assert "common/models/atss_improved.py" in ancestors
    for row in PAPER_ROWS:
        if os.path.basename(row.config).startswith("atss_") and row.config != main:
            assert main in _ancestors(row.config), row


def test_configs_readme_table_is_the_catalog():
    with open(os.path.join(CONFIGS, "README.md")) as f:
        text = f.read()
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].isdigit():
            config = re.search(r"`([^`]+)`", cells[2]).group(1)
            rows.append((int(cells[0]), cells[1], config, *map(float, cells[3:])))
    assert rows == [tuple(r) for r in PAPER_ROWS]
    for r in PAPER_ROWS:
        assert os.path.isfile(os.path.join(CONFIGS, r.config)), r.config
        assert not math.isnan(r.AP)


def test_openimages_rows_are_their_lvis_rows_on_openimages():
    """Table 7: every row's config, 500 classes, OpenImages data with the random sampler, the
    LVIS schedule (180k, steps 120k / 160k); configs/README.md lists the same rows."""
    with open(os.path.join(CONFIGS, "README.md")) as f:
        text = f.read()
    listed = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and "OpenImages/" in cells[1]:
            config = re.search(r"`([^`]+)`", cells[1]).group(1)
            listed.append((cells[0], config, *map(float, cells[2:])))
    assert listed == [tuple(r) for r in OPENIMAGES_ROWS]
    assert {r.config for r in OPENIMAGES_ROWS} == {
        p for p in ALL_CONFIGS if p.startswith("OpenImages/")
    }
    for r in OPENIMAGES_ROWS:
        cfg = load(r.config)
        m = cfg.model
        assert (m.roi_heads.num_classes if "roi_heads" in m else m.num_classes) == 500
        assert m.backbone.bottom_up.stages.depth == (101 if "R-101" in r.row else 50)
        assert cfg.dataloader.train.dataset.names == "oid_challenge_2019_train"
        assert cfg.dataloader.test.dataset.names == "oid_challenge_2019_val"
        assert cfg.dataloader.train.repeat_thresh is None  # the random sampler
        assert cfg.train.max_iter == 180000
        assert cfg.lr_multiplier.scheduler.milestones == [120000, 160000, 180000]
        assert cfg.dataloader.evaluator._target_.__name__ == "OpenImagesEvaluator"
        kind = "EFL" if r.row.endswith("EFL") else None
        if "roi_heads" not in m:
            assert (m.cls_loss._target_.__name__ == "EqualizedFocalLoss") == (kind == "EFL")
