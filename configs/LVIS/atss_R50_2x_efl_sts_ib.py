# Table 5 row 3, "STS + IB" (26.8 AP): the main row without the increased anchors (one anchor of
# side 8 strides per location and k = 9, as the original ATSS).
from ..common.models.atss import model as _atss
from .atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

model.anchor_generator.sizes = _atss.anchor_generator.sizes
model.head.num_anchors = _atss.head.num_anchors
model.anchor_matcher.topk = _atss.anchor_matcher.topk
