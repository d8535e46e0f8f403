# Seesaw loss with its cosine classifier (temperature 20) on the mini-LVIS Faster R-CNN.
from detectron2.config import LazyCall as L

from efl_d2.losses import SeesawLoss

from .faster_rcnn_R18 import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor.cls_loss = L(SeesawLoss)(num_classes="${..num_classes}")
model.roi_heads.box_predictor.cosine_temperature = 20.0
