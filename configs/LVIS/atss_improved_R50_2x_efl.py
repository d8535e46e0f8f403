# EFL on the improved baseline (ATSS + STS + IoU branch + anchors {6, 8}, k = 18), R-50-FPN:
# the paper's main model, 27.5 AP. Paper: Table 2 "EFL (Ours)", Table 3 WF+FF, Table 4 s = 8,
# Table 5 row 5, Table 6 "Baseline† + EFL".
from .atss_R50_2x_efl_sts_ia import dataloader, lr_multiplier, model, optimizer, train

model.quality = "iou"
