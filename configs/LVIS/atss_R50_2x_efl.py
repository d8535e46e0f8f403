# Table 5 row 1, "none" (25.8 AP): ATSS + EFL (s = 8) without the improved settings; "STS"
# without the stabilized settings (1000 warm-up iterations as the other rows, no gradient clipping).
from ..common.lvis_2x import lr_multiplier as _lvis_2x
from .atss_R50_2x_efl_sts import dataloader, lr_multiplier, model, optimizer, train

train.clip_grad = 0.0
lr_multiplier.warmup_length = _lvis_2x.warmup_length
