# The same detector with focal loss (the improved baseline's loss) for comparison with EFL.
from detectron2.config import LazyCall as L

from efl_d2.losses import SigmoidFocalLoss

from .atss_efl_R18 import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss = L(SigmoidFocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)
