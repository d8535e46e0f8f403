#!/usr/bin/env python
"""Training-step cost of ATSS + EFL and PAA + EFL against detectron2's FCOS + focal loss, and of
their assigners.

Measures in one process, on the same synthetic inputs, the same backbone/FPN and head width:

1. one training step (forward, backward, SGD update) of detectron2's FCOS with its sigmoid focal
   loss (the baseline), of ATSS + Equalized Focal Loss (configs/common/models/atss_improved.py) and of
   PAA + EFL (configs/common/models/paa.py), all with C classes on the same feature maps (ATSS
   has 2 anchors per location, PAA 1 anchor, FCOS 1 point);
2. label assignment alone (``label_anchors``: matching + target gathering) of each detector on
   one LVIS-size image (padded 832x1344: 46,564 ATSS anchors) with 800 GT boxes (PAA's from
   random low-score predictions, as its assignment depends on them);
3. the share of each detector's label assignment inside its own training step.

Time: the models alternate step by step (so load from other processes hits both alike);
median over ``--iters`` after one warm-up step each. Peak memory of one step: on CUDA the
allocator's peak above what was allocated before the step; on CPU the growth of the process's
resident-set high-water mark (reset through /proc/self/clear_refs, after returning freed heap
memory to the OS) over the RSS before the step.

The defaults (ResNet-18, 64-channel FPN/head with 2 convs, 2 images of 320x416, 1203 classes) take
about a minute on 2 CPU cores. The paper's scale, e.g. on a GPU::

    python tools/benchmark_train_step.py --depth 50 --channels 256 --head-convs 4 \
        --image-size 800 1344 --batch-size 2 --device cuda
"""

import argparse
import ctypes
import os
import statistics
import sys
import time

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.model_zoo import get_config
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from efl_d2.losses import EqualizedFocalLoss
from efl_d2.model_zoo import small_resnet_fpn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRIDES = (8, 16, 32, 64, 128)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--num-classes", type=int, default=1203)
    p.add_argument("--depth", type=int, default=18, choices=(18, 34, 50, 101))
    p.add_argument("--channels", type=int, default=64, help="FPN and head channels (paper: 256)")
    p.add_argument("--head-convs", type=int, default=2, help="convs per head tower (paper: 4)")
    p.add_argument("--image-size", type=int, nargs=2, default=(320, 416), metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--gt-per-image", type=int, default=20)
    p.add_argument("--assign-gts", type=int, default=800)
    p.add_argument("--assign-size", type=int, nargs=2, default=(832, 1344), metavar=("H", "W"))
    p.add_argument("--iters", type=int, default=5, help="timed steps per model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- measuring


class Meter:
    """Wall time and peak memory of single calls, on CPU or CUDA."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self._libc = None if self.cuda else ctypes.CDLL("libc.so.6")

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def peak_mib(self, fn) -> float:
        """Peak memory (MiB) ``fn`` needs above what is in use when it starts."""
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            self.sync()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        self._libc.malloc_trim(0)  # freed tensors must not be reused silently from the heap
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = self._status_kib("VmRSS")
        fn()
        return (self._status_kib("VmHWM") - base) / 1024

    @staticmethod
    def _status_kib(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"{key} not in /proc/self/status")


# --------------------------------------------------------------------------- models and inputs


EFL_MODELS = {
    "ATSS + EFL": "configs/common/models/atss_improved.py",
    "PAA + EFL": "configs/common/models/paa.py",
}


def model_cfg(args, name: str):
    """ATSS + EFL or PAA + EFL from configs/common/models/, or detectron2's FCOS (focal loss)."""
    if name in EFL_MODELS:
        model = LazyConfig.load(os.path.join(REPO, EFL_MODELS[name])).model
        model.cls_loss = L(EqualizedFocalLoss)(num_classes="${..num_classes}")
    else:
        model = get_config("common/models/fcos.py").model
    model.num_classes = args.num_classes
    return small_resnet_fpn(
        model, depth=args.depth, channels=args.channels, head_convs=args.head_convs
    )


def random_instances(gen, image_hw, num_gt, num_classes, device) -> Instances:
    h, w = image_hw
    size = torch.tensor([w, h], dtype=torch.float32)
    xy = torch.rand(num_gt, 2, generator=gen) * size * 0.9
    wh = torch.rand(num_gt, 2, generator=gen) ** 2 * size * 0.5 + 4  # mostly small, as LVIS
    inst = Instances(image_hw)
    inst.gt_boxes = Boxes(torch.cat([xy, torch.minimum(xy + wh, size)], dim=1))
    inst.gt_classes = torch.randint(num_classes, (num_gt,), generator=gen)
    return inst.to(device)


class Case:
    """One detector with its optimizer, training batch and LVIS-size assignment input."""

    def __init__(self, args, name: str):
        self.name = name
        torch.manual_seed(0)
        self.model = instantiate(model_cfg(args, name)).to(args.device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)
        gen = torch.Generator().manual_seed(0)  # same images and GTs for every case
        hw = tuple(args.image_size)
        self.batch = [
            {
                "image": (torch.rand(3, *hw, generator=gen) * 255).to(args.device),
                "instances": random_instances(
                    gen, hw, args.gt_per_image, args.num_classes, args.device
                ),
            }
            for _ in range(args.batch_size)
        ]
        h, w = args.assign_size
        shapes = [torch.zeros(1, 1, -(-h // s), -(-w // s), device=args.device) for s in STRIDES]
        self.anchors = self.model.anchor_generator(shapes)  # only the sizes matter
        gen = torch.Generator().manual_seed(1)
        self.assign_gt = [
            random_instances(gen, (h, w), args.assign_gts, args.num_classes, args.device)
        ]
        # PAA assigns from the predictions: LVIS-like ones, low scores and small deltas; the
        # other detectors assign from the boxes alone
        num_anchors = sum(len(a) for a in self.anchors)
        self.assign_predictions = (
            (
                torch.randn(1, num_anchors, args.num_classes, generator=gen).to(args.device) - 5,
                0.1 * torch.randn(1, num_anchors, 4, generator=gen).to(args.device),
            )
            if getattr(self.model, "assigns_from_predictions", False)
            else ()
        )
        self.step_times, self.assign_times, self.in_step_assign_times = [], [], []
        self._wrap_label_anchors(Meter(args.device))

    def _wrap_label_anchors(self, meter):
        label_anchors = self.model.label_anchors

        def timed(*a, **k):
            out = []
            self.in_step_assign_times.append(meter.time(lambda: out.append(label_anchors(*a, **k))))
            return out[0]

        self.model.label_anchors = timed
        self._label_anchors = label_anchors

    def step(self):
        losses = self.model(self.batch)
        self.optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        self.optimizer.step()

    def assign(self):
        with torch.no_grad():
            self._label_anchors(self.anchors, self.assign_gt, *self.assign_predictions)


def run(args):
    meter = Meter(args.device)
    cases = [Case(args, name) for name in ("FCOS + focal loss", *EFL_MODELS)]
    results = {}
    with EventStorage():
        for case in cases:  # warm-up (allocator, first-call costs)
            case.step()
            case.assign()
        for _ in range(args.iters):
            for case in cases:
                case.step_times.append(meter.time(case.step))
        for _ in range(max(3, args.iters // 2)):
            for case in cases:
                case.assign_times.append(meter.time(case.assign))
        for case in cases:
            results[case.name] = {
                "step": statistics.median(case.step_times),
                "step_min": min(case.step_times),
                "step_mem": meter.peak_mib(case.step),
                "assign": statistics.median(case.assign_times),
                "assign_min": min(case.assign_times),
                "assign_mem": meter.peak_mib(case.assign),
                "in_step_assign": statistics.median(case.in_step_assign_times),
                "anchors": sum(len(a) for a in case.anchors),
            }
    return results


# --------------------------------------------------------------------------- report


def report(args, results):
    base_name, base = next(iter(results.items()))
    h, w = args.image_size
    ah, aw = args.assign_size
    print(
        f"\nR-{args.depth} FPN, {args.channels}-channel heads x {args.head_convs} convs, "
        f"C = {args.num_classes}, {args.device}; step: {args.batch_size} images {h}x{w} with "
        f"{args.gt_per_image} GTs; assignment: one {ah}x{aw} image with {args.assign_gts} GTs. "
        f"Time ratio: of the medians over {args.iters} runs (min: the least disturbed run).\n"
    )
    header = (
        f"| {'measurement':<44} | {'median ms':>9} | {'min ms':>9} | {'peak MiB':>9} "
        f"| {'time ratio':>10} | {'mem ratio':>9} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for what, t_key, m_key in (
        ("train step", "step", "step_mem"),
        ("label_anchors", "assign", "assign_mem"),
    ):
        for name, r in results.items():
            label = f"{what}: {name}" + (" (baseline)" if name == base_name else "")
            mem_ratio = r[m_key] / base[m_key] if base[m_key] > 0 else float("nan")
            print(
                f"| {label:<44} | {r[t_key] * 1e3:>9.1f} | {r[t_key + '_min'] * 1e3:>9.1f} "
                f"| {r[m_key]:>9.1f} | {r[t_key] / base[t_key]:>9.2f}x | {mem_ratio:>8.2f}x |"
            )
    print()
    for name, r in results.items():
        print(
            f"{name}: label assignment takes {100 * r['in_step_assign'] / r['step']:.1f}% of its "
            f"training step ({r['anchors']} anchors at {ah}x{aw})."
        )


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report(args, run(args))


if __name__ == "__main__":
    sys.exit(main())
