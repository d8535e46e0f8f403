"""Two processes (Gloo, CPU): statistics (EFL's, and the two-stage EQLv2's) are all-reduced,
identical on both ranks, equal to one process seeing both halves, and committing them does not
deadlock with DDP's own all-reduces."""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _loss_references import C, make_batch
from torch import nn

from efl_d2.losses import EQLv2Loss, EqualizedFocalLoss

STEPS = 3
ROWS = 40  # per step, split in two halves across the ranks
NORM = 4.0


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(6, C)
        self.cls_loss = EqualizedFocalLoss(C)

    def forward(self, feats, gt):
        return self.cls_loss(self.linear(feats), gt, NORM)


def _feats(step):
    return torch.randn(ROWS, 6, generator=torch.Generator().manual_seed(100 + step)) * 3


def _region_batch(step):
    g = torch.Generator().manual_seed(200 + step)
    z = torch.randn(ROWS, C + 1, generator=g) * 2
    labels = torch.randint(C + 1, (ROWS,), generator=g)
    return z, labels


def _worker(rank, world, init_file, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        half = slice(rank * ROWS // 2, (rank + 1) * ROWS // 2)
        # 1. The loss alone: each rank sees half of every batch.
        crit = EqualizedFocalLoss(C)
        losses, pending = [], []
        for step in range(STEPS):
            x, gt = make_batch(n=ROWS, seed=step)
            loss = crit(x[half].clone().requires_grad_(True), gt[half], NORM)
            loss.backward()
            losses.append(loss.item())
            pending.append(crit.has_pending_statistics())  # committed at the next forward
        # A step whose gradient is non-finite on rank 1 only (e.g. fp16 overflow) is dropped on
        # both ranks, so they stay identical.
        x, gt = make_batch(n=ROWS, seed=99)
        loss = crit(x[half].clone().requires_grad_(True), gt[half], NORM)
        (loss * (float("inf") if rank == 1 else 1.0)).backward()
        crit.commit_statistics()

        # 2. Inside a DDP model: the commit (a collective) runs in the next forward, after DDP's
        # bucket all-reduces of the previous backward have finished.
        head = _Head()
        ddp = nn.parallel.DistributedDataParallel(head, broadcast_buffers=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
        for step in range(STEPS):
            _, gt = make_batch(n=ROWS, seed=10 + step)
            opt.zero_grad()
            ddp(_feats(step)[half], gt[half]).backward()
            opt.step()
        head.cls_loss.commit_statistics()

        # 3. The two-stage EQLv2: each rank scores half of the sampled RoIs.
        region = EQLv2Loss(C)
        for step in range(STEPS):
            z, labels = _region_batch(step)
            region(z[half].clone().requires_grad_(True), labels[half]).backward()
        region.commit_statistics()
        torch.save(
            {
                "region": {k: v.clone() for k, v in region.state_dict().items()},
                "losses": losses,
                "pending": pending,
                "stats": {k: v.clone() for k, v in crit.state_dict().items()},
                "ddp": {k: v.clone() for k, v in head.state_dict().items()},
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_statistics(tmp_path):
    ctx = mp.start_processes(
        _worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("2-process run did not finish: deadlock?")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))

    # One process seeing both halves.
    crit = EqualizedFocalLoss(C)
    ref_losses = []
    for step in range(STEPS):
        x, gt = make_batch(n=ROWS, seed=step)
        loss = crit(x.clone().requires_grad_(True), gt, NORM)
        loss.backward()
        ref_losses.append(loss.item())
    head = _Head()
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    for step in range(STEPS):
        _, gt = make_batch(n=ROWS, seed=10 + step)
        opt.zero_grad()
        (head(_feats(step), gt) * 0.5).backward()  # DDP averages the two ranks' gradients
        opt.step()

    assert r0["pending"] == r1["pending"] == [True] * STEPS
    # Every step used the same g on both ranks as the single process did (normaliser shared).
    torch.testing.assert_close(
        torch.tensor(r0["losses"]) + torch.tensor(r1["losses"]), torch.tensor(ref_losses)
    )
    for key, ref in (("stats", crit.state_dict()), ("ddp", head.state_dict())):
        for name, value in ref.items():
            assert torch.equal(r0[key][name], r1[key][name]), (key, name)  # identical ranks
            # Summation order differs (two halves + all-reduce vs one pass): float32 tolerance.
            torch.testing.assert_close(r0[key][name], value, rtol=1e-4, atol=1e-5)
    assert r0["stats"]["pos_grad"].sum() > 0 and r0["ddp"]["cls_loss.pos_grad"].sum() > 0

    # EQLv2 sums |p - y| w without the 1 / R (as its authors), so both halves add up to the
    # statistics of one process scoring all the RoIs.
    region = EQLv2Loss(C)
    for step in range(STEPS):
        z, labels = _region_batch(step)
        region(z.clone().requires_grad_(True), labels).backward()
    for name, value in region.state_dict().items():
        assert torch.equal(r0["region"][name], r1["region"][name]), name
        torch.testing.assert_close(r0["region"][name], value, rtol=1e-5, atol=1e-6)
    assert r0["region"]["neg_grad"].min() > 0
