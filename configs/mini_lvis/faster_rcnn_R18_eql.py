# EQL on the mini-LVIS Faster R-CNN. lambda = 0.1 makes 28 of its 40 classes "tail" (all 16 rare,
# 12 of 14 common: those in < 10% of the training images), the share lambda = 0.0011 gives on
# LVIS v1 (815 of 1203).
from detectron2.config import LazyCall as L

from efl_d2.data import category_image_frequencies
from efl_d2.losses import EQLLoss

from .faster_rcnn_R18 import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor.cls_loss = L(EQLLoss)(
    num_classes="${..num_classes}",
    image_frequencies=L(category_image_frequencies)(name="mini_lvis_v1_train"),
    lambda_=0.1,
)
model.roi_heads.box_predictor.cls_prior_prob = 0.001
