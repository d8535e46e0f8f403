# Faster R-CNN R-50-FPN + EQL (Tan et al. 2020): C sigmoid logits with the prior 0.001, lambda =
# 0.0011 on LVIS v1 (the authors' LVIS v1 setting: 815 tail classes, those in <= 109 images).
# Paper: Table 2 "EQL" (25.1 AP).
from detectron2.config import LazyCall as L

from efl_d2.data import category_image_frequencies
from efl_d2.losses import EQLLoss

from .faster_rcnn_R50_2x import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor.cls_loss = L(EQLLoss)(
    num_classes="${..num_classes}",
    image_frequencies=L(category_image_frequencies)(name="lvis_v1_train"),
    lambda_=0.0011,
)
model.roi_heads.box_predictor.cls_prior_prob = 0.001
