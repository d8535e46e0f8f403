# EFL with s = 2. Paper: Table 4.
from .atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss.scale = 2.0
