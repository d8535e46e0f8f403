"""Helpers shared by the model-zoo / checkpoint / notebook / figure / predict tests.

A tiny ATSS + EFL (ResNet-18, 64-channel FPN and 2-conv towers, mini-LVIS's 10 classes, 96x128
test images) written as a LazyConfig file, so tools and the notebook can load it by path like any
config of the model zoo.
"""

import contextlib
import os

import torch

TINY_ATSS_CONFIG = """\
# Tiny ATSS + EFL on mini-LVIS (tests only).
from detectron2.config import LazyCall as L

from efl_d2.losses import EqualizedFocalLoss
from efl_d2.model_zoo import get_config, small_resnet_fpn

model = get_config("common/models/atss_improved.py").model
model.num_classes = {num_classes}
model.head.prior_prob = 0.001
model.test_score_thresh = 0.0
model.max_detections_per_image = 50
model.cls_loss = L(EqualizedFocalLoss)(num_classes="${{..num_classes}}")
model = small_resnet_fpn(model, channels=64)  # GroupNorm(32) needs >= 2 channels per group
model.anchor_generator.sizes = {anchor_sizes}
model.test_topk_candidates = 100

dataloader = get_config("common/data/mini_lvis.py").dataloader
dataloader.test.mapper.augmentations[0].short_edge_length = 96
dataloader.test.mapper.augmentations[0].max_size = 128

train = get_config("common/train.py").train
train.device = "cpu"
"""

STRIDES = (8, 16, 32, 64, 128)


def write_tiny_config(directory, name="tiny_atss.py", num_classes=10, anchor_scales=(6, 8)) -> str:
    """Write the tiny config into ``directory``; returns its path."""
    sizes = [[k * s for k in anchor_scales] for s in STRIDES]
    path = os.path.join(str(directory), name)
    with open(path, "w") as f:
        f.write(TINY_ATSS_CONFIG.format(num_classes=num_classes, anchor_sizes=sizes))
    return path


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter and floating buffer non-trivial values (norm stats included), so a
    wrong mapping of any tensor changes the outputs. Biases of the class logits stay strongly
    negative (detections remain a sparse, score-sorted set) and running variances positive."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point() or name in ("pixel_mean", "pixel_std"):
                continue
            if "cell_anchors" in name:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.startswith("cls_loss."):
                t.copy_(torch.rand(t.shape, generator=gen))
            elif name.endswith(("norm.weight", "running_mean")) or ".norm." in name:
                t.copy_(
                    torch.randn(t.shape, generator=gen) * 0.2
                    + (1.0 if name.endswith("weight") else 0.0)
                )
            elif name == "head.cls_score.bias":
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5 - 4.0)
            elif t.dim() > 1:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
    return model


def image_batch(seed: int = 0, height: int = 160, width: int = 224):
    """Inputs for one random image (pixel values 0..255), model-ready."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=gen) * 255
    return [{"image": image, "height": height, "width": width}]


def assert_same_detections(a, b, atol=1e-5):
    """Two Instances are the same detections (same order, boxes, scores, classes)."""
    assert len(a) == len(b) and len(a) > 0
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.scores, b.scores, atol=atol, rtol=1e-5)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=atol * 100, rtol=1e-5)


def run_tool(name: str):
    """Import ``tools/<name>.py`` by path (site-packages has a stray ``tools`` package)."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def one_torch_thread():
    """Run torch single-threaded (restored afterwards). The tiny models gain nothing from a
    second thread, and on a shared 2-core machine an OpenMP thread waiting for a busy core makes
    every op orders of magnitude slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_thread_env(env=None) -> dict:
    """Environment for subprocesses / notebook kernels with single-threaded torch."""
    env = dict(os.environ if env is None else env)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Data overrides that fit a mini-LVIS / mini-OpenImages config to the session's small build
# (tests/conftest.py: 96x128 images; batch 2, no worker processes) on CPU.
TINY_DATA_OVERRIDES = [
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[96]",
    "dataloader.test.mapper.augmentations.0.short_edge_length=96",
]

# tools/train_net.py overrides that fit a mini-LVIS one-stage config to the session's small
# mini-LVIS (10 classes).
TINY_TRAIN_OVERRIDES = [
    "model.num_classes=10",
    "model.head.conv_dims=[64]",  # GroupNorm(32) needs > 1 value per group at P7
    *TINY_DATA_OVERRIDES,
]


def run_in_repo(cmd: list, env: dict, *, cwd=None, timeout: int = 600):
    """Run ``cmd`` from the repository root (or ``cwd``), ``timeout`` seconds at most; returns
    the ``CompletedProcess`` with text output, whatever the exit status."""
    import subprocess

    return subprocess.run(
        cmd,
        env=env,
        cwd=str(cwd or REPO),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def refuse_to_open(monkeypatch, module, path: str) -> None:
    """Make ``open`` in ``module`` refuse ``path`` with EACCES, as for a file without read
    permission (simulated: the tests may run as root, who reads any file)."""

    def refuse(file, *args, **kwargs):
        if os.fspath(file) == path:
            raise PermissionError(13, "Permission denied", path)
        return open(file, *args, **kwargs)

    monkeypatch.setattr(module, "open", refuse, raising=False)


def run_train_net(args: list, env: dict, script: str | None = None):
    """Run ``tools/train_net.py args`` (or ``python -c script args``) in the repository; returns
    the ``CompletedProcess`` with text output."""
    import sys

    cmd = [sys.executable, "-c", script] if script else [sys.executable, "tools/train_net.py"]
    return run_in_repo(cmd + list(args), env)


def train_in_process(cfg, iterations: int, check_batch=None):
    """Build ``cfg.model`` (seed 0) and train it ``iterations`` steps with the config's optimizer
    and training loader; returns the model (in training mode). ``check_batch(batch)`` is called
    on every batch."""
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    data = iter(instantiate(cfg.dataloader.train))
    with EventStorage():
        for _ in range(iterations):
            batch = next(data)
            if check_batch is not None:
                check_batch(batch)
            losses = model(batch)
            total = sum(losses.values())
            assert torch.isfinite(total), losses
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    return model
