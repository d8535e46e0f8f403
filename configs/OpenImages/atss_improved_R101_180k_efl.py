# The R-101-FPN version of atss_improved_R50_180k_efl.py. Paper: Table 7 R-101 "EFL" (52.6 AP).
from .atss_improved_R50_180k_efl import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
