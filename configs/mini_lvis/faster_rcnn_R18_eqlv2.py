# EQLv2 on the mini-LVIS Faster R-CNN (the authors' constants).
from detectron2.config import LazyCall as L

from efl_d2.losses import EQLv2Loss

from .faster_rcnn_R18 import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor.cls_loss = L(EQLv2Loss)(num_classes="${..num_classes}")
