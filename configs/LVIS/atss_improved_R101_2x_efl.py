# EFL on the improved baseline, R-101-FPN. Paper: Table 2 R-101 "EFL (Ours)" (29.2 AP).
from .atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
