# + increased anchors: scales {6, 8} per location, k = 18. Paper: Table 5 row 4 (26.5 AP).
from .atss_R50_2x_efl_sts import dataloader, lr_multiplier, model, optimizer, train

model.anchor_generator.sizes = [[6 * s, 8 * s] for s in (8, 16, 32, 64, 128)]
model.head.num_anchors = 2
model.anchor_matcher.topk = 18
