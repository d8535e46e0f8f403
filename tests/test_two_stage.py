"""Faster R-CNN with pluggable region losses: the predictor, EQL, the frequencies it reads, and the
mini-LVIS variants of every two-stage method trained and evaluated end to end."""

import copy
import json
import math
import os

import pytest
import torch
from _tiny_zoo import TINY_DATA_OVERRIDES, run_train_net, single_thread_env, train_in_process
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from efl_d2.checkpoint import EFLCheckpointer
from efl_d2.data import category_image_frequencies
from efl_d2.engine import apply_overrides_strict, freeze_all_but
from efl_d2.losses import EQLLoss, EQLv2Loss, SeesawLoss
from efl_d2.modeling import NormedLinear, PluggableFastRCNNOutputLayers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = 5
FEAT = 16


def predictor(cls_loss=None, **kwargs):
    torch.manual_seed(0)
    return PluggableFastRCNNOutputLayers(
        ShapeSpec(channels=FEAT),
        box2box_transform=Box2BoxTransform(weights=(10, 10, 5, 5)),
        num_classes=C,
        cls_loss=cls_loss,
        **kwargs,
    )


def proposals_and_features(seed=0, per_image=(7, 5)):
    g = torch.Generator().manual_seed(seed)
    proposals = []
    for n in per_image:
        inst = Instances((64, 64))
        xy = torch.rand(n, 2, generator=g) * 40
        inst.proposal_boxes = Boxes(torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 10], 1))
        inst.gt_boxes = Boxes(inst.proposal_boxes.tensor + torch.randn(n, 4, generator=g))
        inst.gt_classes = torch.randint(C + 1, (n,), generator=g)
        proposals.append(inst)
    feats = torch.randn(sum(per_image), FEAT, generator=g)
    return proposals, feats


def test_normed_linear_is_a_scaled_cosine_plus_bias():
    layer = NormedLinear(FEAT, 3, temperature=20.0)
    layer.bias.data = torch.tensor([0.5, -1.0, 0.0])
    x = torch.randn(4, FEAT, dtype=torch.float64)
    layer = layer.double()
    expected = torch.empty(4, 3, dtype=torch.float64)
    for i in range(4):
        for j in range(3):
            w = layer.weight[j]
            cos = x[i] @ w / ((x[i].norm() + 1e-6) * (w.norm() + 1e-6))
            expected[i, j] = 20.0 * cos + layer.bias[j]
    torch.testing.assert_close(layer(x), expected)
    assert layer(x * 7).sub(layer(x)).abs().max() < 1e-4  # scale-free in x (up to the 1e-6)


def test_without_cls_loss_the_predictor_is_detectron2s():
    proposals, feats = proposals_and_features()
    ours = predictor()
    theirs = FastRCNNOutputLayers(
        ShapeSpec(channels=FEAT),
        box2box_transform=Box2BoxTransform(weights=(10, 10, 5, 5)),
        num_classes=C,
    )
    theirs.load_state_dict(ours.state_dict())
    with EventStorage():
        a, b = ours.losses(ours(feats), proposals), theirs.losses(theirs(feats), proposals)
    assert a.keys() == b.keys() == {"loss_cls", "loss_box_reg"}
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    for pa, pb in zip(
        ours.predict_probs(ours(feats), proposals), theirs.predict_probs(theirs(feats), proposals)
    ):
        torch.testing.assert_close(pa, pb)  # fmt: skip


@pytest.mark.parametrize(
    "make_loss, kwargs, columns, keys",
    [
        (lambda: EQLv2Loss(C), {}, C + 1, {"loss_cls"}),
        (lambda: EQLLoss(C, image_frequencies=[0.5, 0.1, 0.01, 0.2, 0.0], lambda_=0.05),
         {"cls_prior_prob": 0.001}, C, {"loss_cls"}),
        (lambda: SeesawLoss(C), {"cosine_temperature": 20.0}, C + 2,
         {"loss_cls_classes", "loss_cls_objectness"}),
    ],
)  # fmt: skip
def test_predictor_uses_the_loss_for_training_and_scores(make_loss, kwargs, columns, keys):
    proposals, feats = proposals_and_features()
    ours = predictor(make_loss(), loss_weight={"loss_cls": 2.0, "loss_box_reg": 1.0}, **kwargs)
    plain = predictor()  # same seed: the same box regressor
    assert ours.cls_score.out_features == columns
    assert isinstance(ours.cls_score, NormedLinear) == ("cosine_temperature" in kwargs)
    if "cls_prior_prob" in kwargs:
        assert torch.allclose(ours.cls_score.bias, torch.full((C,), -math.log(999.0)))
    scores, deltas = ours(feats)
    gt = torch.cat([p.gt_classes for p in proposals])
    fresh = copy.deepcopy(ours.cls_loss)  # EQLv2 / Seesaw update their state in the call
    with EventStorage() as storage:
        losses = ours.losses((scores, deltas), proposals)
        stats = storage.latest()
    assert set(losses) == keys | {"loss_box_reg"}
    expected = fresh(scores, gt)
    expected = expected if isinstance(expected, dict) else {"loss_cls": expected}
    for k in keys:
        torch.testing.assert_close(losses[k], 2.0 * expected[k])
    with EventStorage():
        ref_box = plain.losses((plain(feats)[0], deltas), proposals)["loss_box_reg"]
    torch.testing.assert_close(losses["loss_box_reg"], ref_box)
    # Detectron2's accuracy statistics, from the loss's own scores
    probs = ours.cls_loss.probabilities(scores)
    fg = gt < C
    accuracy = (probs[fg].argmax(1) == gt[fg]).float().mean().item()
    assert stats["fast_rcnn/fg_cls_accuracy"][0] == pytest.approx(accuracy)
    split = ours.predict_probs((scores, deltas), proposals)
    assert [s.shape for s in split] == [(7, C + 1), (5, C + 1)]
    torch.testing.assert_close(torch.cat(split), probs)
    sum(losses.values()).backward()
    assert ours.cls_score.weight.grad.abs().sum() > 0


def eql_reference(z, labels, tail):
    """EQL in float64, element by element (Tan et al. 2020, Eqs. 4-6)."""
    rows, c = z.shape
    total = 0.0
    for i in range(rows):
        fg = labels[i] < c
        for j in range(c):
            y = 1.0 if labels[i] == j else 0.0
            w = 1.0 - (1.0 if fg else 0.0) * (1.0 if tail[j] else 0.0) * (1.0 - y)
            p = 1.0 / (1.0 + math.exp(-z[i, j].item()))
            total += w * -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return total / rows


def test_eql_value_and_gradient_match_the_reference():
    freq = [0.5, 0.1, 0.01, 0.2, 0.0009]
    crit = EQLLoss(C, image_frequencies=freq, lambda_=0.05)
    assert crit.tail.tolist() == [0, 0, 1, 0, 1]
    g = torch.Generator().manual_seed(0)
    z = torch.randn(30, C, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(C + 1, (30,), generator=g)
    x = z.clone().requires_grad_(True)
    loss = crit(x, labels)
    loss.backward()
    assert loss.item() == pytest.approx(
        eql_reference(z, labels, [f < 0.05 for f in freq]), rel=1e-12
    )
    p = torch.sigmoid(z)
    y = F.one_hot(labels, C + 1)[:, :C].double()
    # a foreground RoI of class 0 gives no gradient to the tail classes 2 and 4; background does
    for i in range(30):
        for j in range(C):
            suppressed = labels[i] < C and labels[i] != j and j in (2, 4)
            expected = 0.0 if suppressed else (p[i, j] - y[i, j]).item() / 30
            assert x.grad[i, j].item() == pytest.approx(expected, abs=1e-15)
    probs = crit.probabilities(z)
    torch.testing.assert_close(probs[:, :C], p.float())
    assert (probs[:, C] == 0).all()
    with pytest.raises(ValueError, match="entries"):
        EQLLoss(C, image_frequencies=[0.1] * 3, lambda_=0.1)


def test_category_image_frequencies_read_the_json(mini_lvis_root):
    meta = MetadataCatalog.get("mini_lvis_v1_train")
    with open(meta.json_file) as f:
        data = json.load(f)
    annotated = {a["image_id"] for a in data["annotations"]}
    ids = sorted(c["id"] for c in data["categories"])
    per_class = {
        c: {a["image_id"] for a in data["annotations"] if a["category_id"] == c} for c in ids
    }
    expected = [len(per_class[c]) / len(annotated) for c in ids]
    assert category_image_frequencies("mini_lvis_v1_train") == pytest.approx(expected, rel=1e-12)
    with pytest.raises(KeyError, match="not registered"):
        category_image_frequencies("no_such_dataset")


TWO_STAGE_MINI = [
    "faster_rcnn_R18.py",
    "faster_rcnn_R18_eql.py",
    "faster_rcnn_R18_eqlv2.py",
    "faster_rcnn_R18_seesaw.py",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", TWO_STAGE_MINI)
def test_mini_lvis_two_stage_variant_trains_and_evaluates(name, mini_lvis_root, tmp_path):
    cfg = LazyConfig.load(os.path.join(REPO, "configs", "mini_lvis", name))
    apply_overrides_strict(
        cfg,
        [
            "model.roi_heads.num_classes=10",  # the session's small mini-LVIS
            "model.roi_heads.box_predictor.test_score_thresh=0.0",  # 3 iterations: low scores
            *TINY_DATA_OVERRIDES,
            f"+dataloader.evaluator.output_dir={tmp_path}",
        ],
    )
    model = train_in_process(cfg, 3)
    loss = model.roi_heads.box_predictor.cls_loss
    if isinstance(loss, EQLv2Loss):
        assert loss.neg_grad.min() > 0  # statistics collected in training
    if isinstance(loss, SeesawLoss):
        assert loss.cum_samples.sum() == 3 * 2 * 512  # 512 sampled RoIs per image
    model.eval()
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    assert {"AP", "APr", "APc", "APf"} <= set(results["bbox"])
    assert all(math.isfinite(v) for v in results["bbox"].values())


@pytest.mark.slow
@pytest.mark.parametrize("second", ["faster_rcnn_R18_crt.py", "faster_rcnn_R18_bags.py"])
def test_decoupled_training_runs_both_stages_end_to_end(second, env_with_datasets, tmp_path):
    """Stage 1 (Faster R-CNN, RFS) then stage 2 (classifier re-initialised and retrained alone,
    CBS) through tools/train_net.py: everything but the classifier is stage 1's, bit for bit."""
    tiny = [
        "model.roi_heads.num_classes=10",
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        *TINY_DATA_OVERRIDES,
        "train.vis_images=0",
    ]
    first, out = tmp_path / "first", tmp_path / "second"
    runs = [
        ["--config-file", "configs/mini_lvis/faster_rcnn_R18.py", *tiny, "train.max_iter=4",
         f"train.output_dir={first}"],
        ["--config-file", f"configs/mini_lvis/{second}", *tiny, "train.max_iter=3",
         f"train.output_dir={out}", f"train.init_checkpoint={first}/model_final.pth"],
    ]  # fmt: skip
    for args in runs:
        proc = run_train_net(args, single_thread_env(env_with_datasets))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "APr" in proc.stdout + proc.stderr  # evaluated
    log = proc.stdout + proc.stderr
    assert "re-initialised for retraining" in log and "Class-balanced sampling" in log
    a = torch.load(first / "model_final.pth", weights_only=True)["model"]
    b = torch.load(out / "model_final.pth", weights_only=True)["model"]
    classifier = "roi_heads.box_predictor.cls_score."
    assert {k for k in b if not k.startswith(classifier)} <= set(a)
    for key, value in b.items():
        if key.startswith(classifier):
            assert value.shape != a[key].shape or not torch.equal(value, a[key]), key
        else:
            assert torch.equal(value, a[key]), key  # frozen, BatchNorm statistics included
    if second.endswith("bags.py"):
        assert b[classifier + "weight"].shape[0] > 11  # [bg, fg] + a softmax per group


def test_new_run_reinitialises_retrained_modules_and_resume_loads_them(tmp_path):
    """EFLCheckpointer(reinitialize=...): a new run does not load the classifier from its init
    checkpoint (it keeps its constructor's values); a resumed run loads its own whole."""
    trained = predictor()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    torch.save({"model": trained.state_dict()}, tmp_path / "first.pth")
    fresh = predictor()
    init = {k: v.clone() for k, v in fresh.state_dict().items()}
    frozen = freeze_all_but(fresh, ["cls_score"])
    assert frozen == ["cls_score.weight", "cls_score.bias"]
    assert not fresh.bbox_pred.weight.requires_grad and fresh.cls_score.weight.requires_grad
    (tmp_path / "second").mkdir()
    ckpt = EFLCheckpointer(fresh, str(tmp_path / "second"), reinitialize=["cls_score"])
    ckpt.resume_or_load(str(tmp_path / "first.pth"), resume=True)  # nothing to resume: new run
    state = fresh.state_dict()
    assert torch.equal(state["cls_score.weight"], init["cls_score.weight"])
    assert torch.equal(state["bbox_pred.weight"], trained.state_dict()["bbox_pred.weight"])
    ckpt.save("model_final")
    resumed = predictor()
    again = EFLCheckpointer(resumed, str(tmp_path / "second"), reinitialize=["cls_score"])
    again.resume_or_load(str(tmp_path / "first.pth"), resume=True)
    assert again.resumed_from and torch.equal(resumed.cls_score.weight, fresh.cls_score.weight)
    with pytest.raises(ValueError, match="names no parameter"):
        freeze_all_but(predictor(), ["cls_scores"])


def test_freezing_turns_batchnorm_outside_the_retrained_modules_into_frozen_batchnorm():
    from detectron2.layers import FrozenBatchNorm2d

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1),
        torch.nn.BatchNorm2d(4),
        torch.nn.Sequential(torch.nn.BatchNorm2d(4)),
    )
    freeze_all_but(model, ["2"])
    assert isinstance(model[1], FrozenBatchNorm2d)
    assert isinstance(model[2][0], torch.nn.BatchNorm2d)  # inside the retrained module
