# The R-101-FPN version of retinanet_R50_180k.py. Paper: Table 7 R-101 "RetinaNet" (35.8 AP).
from .retinanet_R50_180k import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
