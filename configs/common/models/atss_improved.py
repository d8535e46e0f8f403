# The EFL paper's improved ATSS head (Sec. 4.3, Table 5), on ./atss.py: "IA", two square anchors
# per location, sides 6 and 8 strides (scale 6 first, as the official weights expect), with k = 18
# (9 per anchor shape); "IB", an IoU branch instead of centerness. Loss still focal: with the
# stabilized training settings this is the paper's Baseline†.
from .atss import model

model.anchor_generator.sizes = [[6 * s, 8 * s] for s in (8, 16, 32, 64, 128)]
model.head.num_anchors = 2
model.anchor_matcher.topk = 18
model.quality = "iou"
