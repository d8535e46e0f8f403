# EFL with s = 1. Paper: Table 4.
from .atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss.scale = 1.0
