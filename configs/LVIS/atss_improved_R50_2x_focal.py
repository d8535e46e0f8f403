# The improved baseline (Baseline†): focal loss on ATSS + STS + IB + IA, 25.7 AP.
# Paper: Table 2 "Baseline†", Table 3 (no WF, no FF), Table 4 s = 0 (EFL with s = 0 is exactly
# focal loss), Table 6 "Baseline†".
from detectron2.config import LazyCall as L

from efl_d2.losses import SigmoidFocalLoss

from .atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss = L(SigmoidFocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)
