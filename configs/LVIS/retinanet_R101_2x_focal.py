# RetinaNet R-101-FPN, focal loss. Paper: Table 2 R-101 "RetinaNet" (19.6 AP).
from .retinanet_R50_2x_focal import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
