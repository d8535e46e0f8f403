# Study variant "efl" (s = 8, gamma_b = 2): configs/mini_lvis/atss_efl_R18.py unchanged.
# The s sweep reuses this file with the override model.cls_loss.scale=<s>.
from ....configs.mini_lvis.atss_efl_R18 import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)
