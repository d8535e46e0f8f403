# The R-101-FPN version of faster_rcnn_R50_2x_eqlv2.py. Paper: Table 2 R-101 "EQLv2" (26.9 AP).
from .faster_rcnn_R50_2x_eqlv2 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
