# The paper's main model, 27.5 AP: EFL (s = 8) on the improved baseline (ATSS + IA + IB, with the
# stabilized training settings STS), R-50-FPN, 2x. Paper: Table 2 "EFL (Ours)", Table 3 WF+FF,
# Table 4 s = 8, Table 5 row 5, Table 6 "Baseline† + EFL". The other ATSS rows are diffs of this
# file: Baseline† swaps EFL for focal loss, Table 5's ablations take components away.
#
# Every ATSS row labels anchors with the official code's conventions where they change which
# anchors are positive: its centre-inside test (0.5 px stricter) and its resize of the
# inclusive-pixel GT boxes (flip first, then OpenCV's resize with x2 - 1 scaled).
# See configs/README.md.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from efl_d2.losses import EqualizedFocalLoss
from efl_d2.official import OpenCVResizeShortestEdge

from ..common.lvis_2x import dataloader, lr_multiplier, optimizer, train
from ..common.lvis_one_stage import lvis_one_stage
from ..common.models.atss_improved import model

model = lvis_one_stage(model)
model.anchor_matcher.center_convention = "official"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(OpenCVResizeShortestEdge)(
        short_edge_length=(640, 672, 704, 736, 768, 800),
        max_size=1333,
        sample_style="choice",
        inclusive_boxes=True,
    ),
]

model.cls_loss = L(EqualizedFocalLoss)(num_classes="${..num_classes}", gamma_b=2.0, scale=8.0)

# STS, the stabilized settings: 6000 warm-up iterations, gradient clipping at 35.
train.clip_grad = 35.0
lr_multiplier.warmup_length = 6000 / train.max_iter
