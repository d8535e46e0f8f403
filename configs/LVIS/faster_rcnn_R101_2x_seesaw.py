# The R-101-FPN version of faster_rcnn_R50_2x_seesaw.py. Paper: Table 2 R-101 "Seesaw Loss" (27.8 AP).
from .faster_rcnn_R50_2x_seesaw import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
