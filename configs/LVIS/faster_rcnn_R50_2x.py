# Detectron2's Faster R-CNN R-50-FPN (box only) on LVIS v1, 2x with RFS, softmax cross entropy:
# the paper's two-stage reference. Paper: Table 1 / 2 "Faster R-CNN" (24.1 AP).
from ..common.lvis_2x import dataloader, lr_multiplier, optimizer, train
from ..common.lvis_two_stage import lvis_two_stage
from ..common.models.faster_rcnn import model

model = lvis_two_stage(model)
