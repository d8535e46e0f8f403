# Study variant "EQLv2&Focal" (paper Table 1): focal loss times EQLv2's gradient-guided weights.
from detectron2.config import LazyCall as L

from efl_d2.losses import EQLv2FocalLoss

from .focal import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss = L(EQLv2FocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)
