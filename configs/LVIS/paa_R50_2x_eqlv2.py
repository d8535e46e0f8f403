# PAA + EQLv2&Focal. Paper: Table 1 (24.1 AP).
from detectron2.config import LazyCall as L

from efl_d2.losses import EQLv2FocalLoss

from .paa_R50_2x_focal import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss = L(EQLv2FocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)
