# RetinaNet R-50-FPN, focal loss. Paper: Table 1 / 2 / 6 "RetinaNet" (18.5 AP).
# The paper trains all RetinaNet and FCOS* rows with the stabilized settings (Sec. 4.3).
from ..common.lvis_2x import dataloader, lr_multiplier, optimizer, train
from ..common.lvis_one_stage import lvis_one_stage
from ..common.models.retinanet_pluggable import model

model = lvis_one_stage(model)
train.clip_grad = 35.0  # STS
lr_multiplier.warmup_length = 6000 / train.max_iter  # STS
