# Table 5 row 4, "STS + IA" (26.5 AP): the main row without the IoU branch (centerness, as
# the original ATSS).
from ..common.models.atss import model as _atss
from .atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

model.quality = _atss.quality
