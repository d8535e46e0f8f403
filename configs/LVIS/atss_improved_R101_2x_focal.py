# The improved baseline, R-101-FPN. Paper: Table 2 R-101 "Baseline†" (27.0 AP).
from .atss_improved_R50_2x_focal import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
