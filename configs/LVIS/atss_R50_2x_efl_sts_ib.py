# + IoU branch instead of centerness. Paper: Table 5 row 3 (26.8 AP).
from .atss_R50_2x_efl_sts import dataloader, lr_multiplier, model, optimizer, train

model.quality = "iou"
