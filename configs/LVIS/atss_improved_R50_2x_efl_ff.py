# EFL with the focusing factor only (w_j = 1). Paper: Table 3 row 3 (26.2 AP).
from .atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

model.cls_loss.weighting_factor = False
