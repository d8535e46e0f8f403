# Faster R-CNN R-50-FPN + Seesaw loss (Wang et al. 2021), its LVIS recipe: p = 0.8, q = 2.0,
# C + 2 logits (classes + objectness) from a normalised cosine classifier of temperature 20,
# class-specific box regression. Paper: Table 1 / 2 "Seesaw Loss" (26.4 AP).
from detectron2.config import LazyCall as L

from efl_d2.losses import SeesawLoss

from .faster_rcnn_R50_2x import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor.cls_loss = L(SeesawLoss)(
    num_classes="${..num_classes}", p=0.8, q=2.0, eps=0.01
)
model.roi_heads.box_predictor.cosine_temperature = 20.0
