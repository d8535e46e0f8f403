# PAA + EFL (s = 8). Paper: Table 6 (25.6 AP).
from detectron2.config import LazyCall as L

from efl_d2.losses import EqualizedFocalLoss

from .paa_R50_2x_focal import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss = L(EqualizedFocalLoss)(num_classes="${..num_classes}", gamma_b=2.0, scale=8.0)
