# Faster R-CNN R-101-FPN. Paper: Table 2 R-101 "Faster R-CNN" (25.7 AP).
from .faster_rcnn_R50_2x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
