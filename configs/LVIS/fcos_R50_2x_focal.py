# FCOS* (FCOS with centre sampling, as detectron2's FCOS) R-50-FPN, focal loss.
# Paper: Table 1 / 6 "FCOS*" (22.6 AP). Trained with the stabilized settings (Sec. 4.3).
from ..common.lvis_2x import dataloader, lr_multiplier, optimizer, train
from ..common.lvis_one_stage import lvis_one_stage
from ..common.models.fcos_pluggable import model

model = lvis_one_stage(model)
train.clip_grad = 35.0  # STS
lr_multiplier.warmup_length = 6000 / train.max_iter  # STS
