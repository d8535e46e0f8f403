# + stabilized settings: 6000 warm-up iterations, gradient clipping at 35. Paper: Table 5 row 2.
from .atss_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

train.clip_grad = 35.0
lr_multiplier.warmup_length = 6000 / train.max_iter
