"""The CUDA paths: the loss kernel, its statistics, ATSS, PAA's assignment and a whole AMP
training run on the GPU.

Every test compares the GPU against an independent reference (float64 on the CPU, or the same
model on the CPU). They need a CUDA device and are skipped without one (CI has none); on a GPU
machine run ``pytest tests/test_cuda.py``.
"""

import copy
import json
import math
import os
import subprocess
import sys

import _atss_references
import numpy as np
import pytest
import torch
from _loss_references import (
    VARIANTS,
    C,
    efl_params,
    eqlv2_params,
    make_batch,
    reference_run,
    reference_stats,
)
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from efl_d2.losses import EQLv2FocalLoss, EqualizedFocalLoss, SigmoidFocalLoss, focal_kernel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
G = torch.tensor([1.0, 0.7, 0.3, 0.05, 0.0])


def _losses_with_params():
    """(criterion on CUDA, its (gamma, pos_w, neg_w) in float64) for each member of the family."""
    efl = EqualizedFocalLoss(C).eval()
    efl.pos_neg.copy_(G)
    eql = EQLv2FocalLoss(C).eval()
    eql.pos_grad.copy_(torch.tensor([3.0, 1.0, 0.5, 0.0, 2.0]))
    eql.neg_grad.copy_(torch.tensor([1.0, 1.0, 1.0, 4.0, 2.2]))
    eql_params = eqlv2_params(eql.pos_grad, eql.neg_grad)
    focal_params = efl_params(torch.ones(C))
    return [
        (efl.cuda(), efl_params(G)),
        (eql.cuda(), eql_params),
        (SigmoidFocalLoss(C).cuda(), focal_params),
    ]


@pytest.mark.parametrize("chunk", [None, 2 * C], ids=["default-chunks", "2-row-chunks"])
def test_loss_and_gradient_on_cuda_match_float64_reference(chunk, monkeypatch):
    monkeypatch.setattr(focal_kernel, "_CHUNK_ELEMENTS_OVERRIDE", chunk)
    x, gt = make_batch()  # saturated logits of both signs, ignored rows
    for crit, params in _losses_with_params():
        xa = x.clone().cuda().requires_grad_(True)
        loss = crit(xa, gt.cuda(), 3.0)
        loss.backward()
        ref_loss, ref_grad, _, _ = reference_stats(x, gt, *params, 3.0)
        assert loss.device.type == "cuda" and loss.dtype == torch.float32
        torch.testing.assert_close(loss.double().cpu(), ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(xa.grad.double().cpu(), ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_statistics_loop_on_cuda_matches_reference(variant):
    build, params_fn = VARIANTS[variant]
    batches = [make_batch(seed=s) for s in range(4)]
    normalizers = [3.0, 5.0, 1.0, 2.5]
    crit = build().cuda().train()
    losses = []
    for (x, gt), norm in zip(batches, normalizers):
        loss = crit(x.clone().cuda().requires_grad_(True), gt.cuda(), norm)
        loss.backward()
        losses.append(loss.detach().double().cpu())
    ref_losses, pos_grad, neg_grad, pos_neg = reference_run(batches, normalizers, params_fn)
    torch.testing.assert_close(torch.stack(losses), ref_losses, rtol=2e-5, atol=1e-6)
    for name, ref in (("pos_grad", pos_grad), ("neg_grad", neg_grad), ("pos_neg", pos_neg)):
        buf = getattr(crit, name)
        assert buf.device.type == "cuda" and buf.dtype == torch.float32
        torch.testing.assert_close(buf.double().cpu(), ref, rtol=2e-5, atol=1e-7)


def _reference_on_device(x, gt, gamma, pos_w, neg_w, normalizer):
    """Float64 EFL-family loss and gradient on x's device (as _loss_references.reference_loss)."""
    x = x.detach().double().requires_grad_(True)
    y = torch.zeros(x.shape[0], x.shape[1] + 1, dtype=torch.float64, device=x.device)
    y[torch.arange(x.shape[0], device=x.device), gt.clamp(min=0)] = 1.0
    y = y[:, :-1] * (gt >= 0).double()[:, None]
    xt = torch.where(y > 0, x, -x)
    w = torch.where(y > 0, pos_w.to(x.device), neg_w.to(x.device))
    elem = w * torch.exp(gamma.to(x.device) * F.logsigmoid(-xt)) * (-F.logsigmoid(xt))
    loss = (elem * (gt >= 0).double()[:, None]).sum() / normalizer
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def test_paper_sized_input_on_cuda_matches_reference_within_the_memory_bound():
    # One 800x1333 image's anchors x LVIS classes: several default-sized chunks on the GPU.
    n, c = 46564, 1203
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, c, device="cuda", generator=gen) * 4 - 4
    gt = torch.randint(0, c + 1, (n,), device="cuda", generator=gen)
    gt[torch.rand(n, device="cuda", generator=gen) < 0.9] = c  # mostly background
    gt[torch.rand(n, device="cuda", generator=gen) < 0.05] = -1
    g = torch.rand(c, device="cuda", generator=gen)
    crit = EqualizedFocalLoss(c).cuda().eval()
    crit.pos_neg.copy_(g)

    xa = x.clone().requires_grad_(True)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss = crit(xa, gt, 123.0)
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra <= 2.0 * x.numel() * x.element_size()  # gradient + bounded chunk workspace

    ref_loss, ref_grad = _reference_on_device(x, gt, *efl_params(g.cpu()), 123.0)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(xa.grad.double(), ref_grad, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_logits_give_fp32_loss_and_fp32_statistics(dtype):
    x, gt = make_batch(big=False)
    layer = torch.nn.Linear(C, C).cuda()
    torch.nn.init.eye_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    crit = EqualizedFocalLoss(C).cuda().train()
    crit(torch.randn(8, C, device="cuda", requires_grad=True), gt[:8].cuda(), 1.0).backward()
    reference = copy.deepcopy(crit)
    with torch.autocast("cuda", dtype=dtype):
        logits = layer(x.cuda())
        loss = crit(logits, gt.cuda(), 5.0)
    assert logits.dtype == dtype and loss.dtype == torch.float32
    loss.backward()
    crit.commit_statistics()
    # The same low-precision values in fp32 give the same loss and statistics.
    xb = logits.detach().float().requires_grad_(True)
    ref = reference(xb, gt.cuda(), 5.0)
    ref.backward()
    reference.commit_statistics()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    assert crit.pos_grad.dtype == torch.float32
    for name in ("pos_grad", "neg_grad", "pos_neg"):
        torch.testing.assert_close(
            getattr(crit, name), getattr(reference, name), rtol=2e-3, atol=1e-6
        )


def test_atss_losses_and_gradients_on_cuda_match_cpu(monkeypatch):
    # TF32 convolutions (cuDNN's default) round to 10 mantissa bits: compare in true fp32.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cpu_model = _atss_references.make_atss(cls_loss=EqualizedFocalLoss(4)).train()
    gpu_model = copy.deepcopy(cpu_model).cuda()
    results = []
    for model, device in ((cpu_model, "cpu"), (gpu_model, "cuda")):
        batch = _atss_references.make_batch()
        for d in batch:
            d["image"] = d["image"].to(device)
        with EventStorage():
            losses = model(batch)
            sum(losses.values()).backward()
        grads = {
            k: p.grad.detach().cpu() for k, p in model.named_parameters() if p.grad is not None
        }
        results.append(({k: v.detach().cpu() for k, v in losses.items()}, grads))
    (cpu_losses, cpu_grads), (gpu_losses, gpu_grads) = results
    assert set(cpu_losses) == set(gpu_losses) and len(cpu_grads) == len(gpu_grads) > 0
    for k in cpu_losses:
        torch.testing.assert_close(gpu_losses[k], cpu_losses[k], rtol=1e-4, atol=1e-6)
    for k in cpu_grads:
        torch.testing.assert_close(gpu_grads[k], cpu_grads[k], rtol=1e-3, atol=1e-5)
    # The same anchors were positive on both devices: the EFL statistics agree too.
    cpu_loss, gpu_loss = cpu_model.cls_loss, gpu_model.cls_loss
    cpu_loss.commit_statistics()
    gpu_loss.commit_statistics()
    torch.testing.assert_close(gpu_loss.pos_grad.cpu(), cpu_loss.pos_grad, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(gpu_loss.neg_grad.cpu(), cpu_loss.neg_grad, rtol=1e-3, atol=1e-7)

    cpu_model.eval()
    gpu_model.eval()
    with torch.no_grad():
        image = _atss_references.make_batch()[0]["image"]
        cpu_out = cpu_model([{"image": image}])[0]["instances"]
        gpu_out = gpu_model([{"image": image.cuda()}])[0]["instances"].to("cpu")
    top = min(len(cpu_out), len(gpu_out), 20)
    assert top > 0
    torch.testing.assert_close(gpu_out.scores[:top], cpu_out.scores[:top], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(
        gpu_out.pred_boxes.tensor[:top], cpu_out.pred_boxes.tensor[:top], rtol=1e-3, atol=1e-2
    )


def test_paa_mixture_fit_and_reassignment_on_cuda_match_cpu():
    rng = np.random.default_rng(0)
    costs = torch.tensor(rng.gamma(2.0, 1.0, 400), dtype=torch.float32)
    gt_idxs = torch.tensor(rng.integers(0, 30, 400))
    levels = torch.tensor(rng.integers(0, 5, 400))
    model = _atss_references.make_paa()
    cpu = model.select_positives(costs, gt_idxs, levels, 30)
    gpu = model.cuda().select_positives(costs.cuda(), gt_idxs.cuda(), levels.cuda(), 30)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu) and cpu.any()


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_train_net_amp_on_cuda_trains_and_evaluates(tmp_path, mini_lvis_root, precision):
    out = tmp_path / "run"
    env = dict(os.environ, DETECTRON2_DATASETS=mini_lvis_root, PYTHONWARNINGS="ignore")
    args = [
        "--config-file", os.path.join(REPO, "configs/mini_lvis/atss_efl_R18.py"),
        "model.num_classes=10",
        "dataloader.train.total_batch_size=4",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "train.max_iter=30",
        "train.device=cuda",
        "train.amp.enabled=True",
        f"train.amp.precision={precision}",
        "train.clip_grad=35",
        f"train.output_dir={out}",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools/train_net.py"), *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "CUDA is not available" not in proc.stdout + proc.stderr
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(v) and abs(v) < 1e4 for v in losses)  # finite under AMP
    assert any("efl/gamma_r" in m for m in metrics)
    final = [m for m in metrics if "bbox/APr" in m][-1]
    assert all(math.isfinite(final[k]) for k in ("bbox/AP", "bbox/APr", "bbox/APc", "bbox/APf"))
