# Original ATSS R-50-FPN (centerness branch, one anchor of scale 8, k = 9), focal loss, no
# stabilized settings. Paper: Table 1 "ATSS" (24.7 AP).
from detectron2.config import LazyCall as L

from efl_d2.losses import SigmoidFocalLoss

from ..common.lvis_2x import dataloader, lr_multiplier, optimizer, train
from ..common.lvis_one_stage import lvis_one_stage
from ..common.models.atss import model

model = lvis_one_stage(model)
model.cls_loss = L(SigmoidFocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)
model.quality = "centerness"
model.anchor_generator.sizes = [[8 * s] for s in (8, 16, 32, 64, 128)]
model.head.num_anchors = 1
model.anchor_matcher.topk = 9
