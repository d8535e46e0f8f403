# The original ATSS R-50-FPN (centerness branch, one anchor of side 8 strides, k = 9), focal
# loss, no stabilized settings. Paper: Table 1 "ATSS" (24.7 AP). Table 5's "none" row
# (./atss_R50_2x_efl.py) with focal loss instead of EFL.
from detectron2.config import LazyCall as L

from efl_d2.losses import SigmoidFocalLoss

from .atss_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss = L(SigmoidFocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)
