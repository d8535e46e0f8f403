#!/usr/bin/env python
"""Benchmark the fused EFL kernel against a naive (official-style) formulation.

Both run in this process on the same inputs: forward + backward + statistics collection of EFL
with non-trivial per-class g (so every class has its own gamma_j and w_j). The naive formulation
mirrors the official implementation: one-hot targets, masked copies, elementwise autograd, and the
statistics from the logits' gradient. Prints one table with median time, extra peak memory and the
naive/ours ratios, plus the max difference of loss and gradient as a sanity check.

Extra peak memory is what the step allocates on top of the live inputs (the returned gradient
included): on CUDA from ``torch.cuda.max_memory_allocated``, on CPU from the allocation events of
``torch.profiler`` (``profile_memory=True``), accumulated in time order.

    python tools/benchmark_loss.py                       # N=46,564 anchors x C=1203 classes
    python tools/benchmark_loss.py --rows 8192 --classes 1203 --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from efl_d2.losses import EqualizedFocalLoss, focal_kernel


def naive_efl(
    logits: torch.Tensor,
    gt: torch.Tensor,
    pos_neg: torch.Tensor,
    stats: list,
    *,
    gamma_b: float = 2.0,
    scale: float = 8.0,
    alpha: float = 0.25,
    normalizer: float = 1.0,
) -> torch.Tensor:
    """EFL written the straightforward way; registers a hook collecting the statistics."""
    n, c = logits.shape
    target = torch.zeros(n, c + 1, device=logits.device, dtype=logits.dtype)
    target[torch.arange(n, device=logits.device), gt.clamp(min=0)] = 1
    target = target[:, :c]
    mask = gt != -1
    x = logits[mask]
    y = target[mask]
    p = torch.sigmoid(x)
    pt = p * y + (1 - p) * (1 - y)
    gamma_j = gamma_b + scale * (1 - pos_neg)
    weight = gamma_j / gamma_b
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")  # -log(pt), stable
    loss = (alpha_t * weight * (1 - pt) ** gamma_j * ce).sum() / normalizer

    def collect(grad):
        g = grad[mask].abs()
        stats.append(((g * y).sum(0), (g * (1 - y)).sum(0)))

    if logits.requires_grad:
        logits.register_hook(collect)
    return loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time of ``step`` (the caller has run it once already as a warm-up)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_extra_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated during ``step`` above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    mem = sorted(
        (e["ts"], e["args"]["Bytes"])
        for e in events
        if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0
    )
    cur = peak = 0
    for _, nbytes in mem:
        cur += nbytes
        peak = max(peak, cur)
    return peak


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=46564, help="anchors N (one 800x1333 image)")
    parser.add_argument("--classes", type=int, default=1203, help="classes C (LVIS v1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--chunk-elements", type=int, default=0, help="override the kernel's chunk size"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chunk_elements:
        focal_kernel._CHUNK_ELEMENTS_OVERRIDE = args.chunk_elements

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    n, c = args.rows, args.classes
    logits = (torch.randn(n, c, generator=gen) * 2 - 4).to(device=device, dtype=dtype)
    # ~1% positives, the rest background, a few ignored rows; long-tailed class distribution.
    gt = torch.full((n,), c, dtype=torch.long)
    pos = torch.rand(n, generator=gen) < 0.01
    cls = (torch.rand(n, generator=gen) ** 3 * c).long().clamp(max=c - 1)
    gt[pos] = cls[pos]
    gt[torch.rand(n, generator=gen) < 0.001] = -1
    gt = gt.to(device)
    normalizer = max(int(pos.sum()), 1)
    pos_neg = torch.rand(c, generator=gen).to(device)

    crit = EqualizedFocalLoss(c).to(device).train()
    state = {k: v.clone() for k, v in crit.state_dict().items()}
    state["pos_neg"] = pos_neg.clone()

    x_ours = logits.clone().requires_grad_(True)
    x_naive = logits.clone().requires_grad_(True)

    def ours():
        crit.load_state_dict(state)
        x_ours.grad = None
        crit(x_ours, gt, normalizer).backward()

    naive_stats: list = []

    def naive():
        naive_stats.clear()
        x_naive.grad = None
        naive_efl(
            x_naive.float() if dtype != torch.float32 else x_naive,
            gt,
            pos_neg,
            naive_stats,
            normalizer=normalizer,
        ).backward()

    # Correctness on these inputs (one step each; also the warm-up of the timings).
    crit.load_state_dict(state)
    x_ours.grad = None
    loss_ours = crit(x_ours, gt, normalizer)
    loss_ours.backward()
    naive_stats.clear()
    x_naive.grad = None
    loss_naive = naive_efl(
        x_naive.float() if dtype != torch.float32 else x_naive,
        gt,
        pos_neg,
        naive_stats,
        normalizer=normalizer,
    )
    loss_naive.backward()
    d_loss = abs(loss_ours.item() - loss_naive.item()) / abs(loss_naive.item())
    d_grad = (x_ours.grad.float() - x_naive.grad.float()).abs().max().item()
    d_pos = (
        (crit.pos_grad - naive_stats[-1][0]).abs().max() / naive_stats[-1][0].abs().max()
    ).item()
    d_neg = (
        (crit.neg_grad - naive_stats[-1][1]).abs().max() / naive_stats[-1][1].abs().max()
    ).item()

    t_ours = time_step(ours, device, args.repeats)
    t_naive = time_step(naive, device, args.repeats)
    x_ours.grad = None
    x_naive.grad = None
    m_ours = peak_extra_bytes(ours, device)
    x_ours.grad = None
    m_naive = peak_extra_bytes(naive, device)
    x_naive.grad = None

    mib = 2**20
    in_bytes = logits.numel() * logits.element_size()
    threads = torch.get_num_threads()
    print(
        f"EFL forward+backward+statistics, N={n} x C={c}, {args.dtype} on {device} "
        f"({threads} threads), logits = {in_bytes / mib:.1f} MiB, median of {args.repeats}"
    )
    header = f"{'':<8}{'time (s)':>10}{'extra peak (MiB)':>18}{'peak / logits':>15}"
    print(header)
    print("-" * len(header))
    for name, t, m in (("naive", t_naive, m_naive), ("ours", t_ours, m_ours)):
        print(f"{name:<8}{t:>10.3f}{m / mib:>18.1f}{m / in_bytes:>15.2f}")
    print(
        f"{'ratio':<8}{t_naive / t_ours:>9.2f}x{m_naive / max(m_ours, 1):>17.2f}x"
        f"{'(naive / ours)':>15}"
    )
    print(
        f"check: rel. loss diff {d_loss:.1e}, max |grad diff| {d_grad:.1e}, "
        f"rel. stats diff pos {d_pos:.1e} neg {d_neg:.1e}"
    )


if __name__ == "__main__":
    main()
