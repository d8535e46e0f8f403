# Original ATSS R-50-FPN (centerness branch, one anchor of scale 8, k = 9), focal loss, no
# stabilized settings. Paper: Table 1 "ATSS" (24.7 AP).
#
# Every ATSS row (this file and those importing it) labels anchors with the official code's
# conventions where they change which anchors are positive: its centre-inside test (0.5 px
# stricter) and its resize of the inclusive-pixel GT boxes (flip first, then OpenCV's resize
# with x2 - 1 scaled). See configs/README.md.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from efl_d2.data import OpenCVResizeShortestEdge

from ..common.lvis_2x import dataloader, lr_multiplier, optimizer, train
from ..common.lvis_one_stage import lvis_one_stage
from ..common.models.atss import model

model = lvis_one_stage(model)
model.anchor_matcher.center_convention = "united_perception"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(OpenCVResizeShortestEdge)(
        short_edge_length=(640, 672, 704, 736, 768, 800),
        max_size=1333,
        sample_style="choice",
        inclusive_boxes=True,
    ),
]
