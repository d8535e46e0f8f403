# Study variant "focal" (the paper's Baseline†): ATSS R-18 on mini-LVIS with sigmoid focal loss.
# Everything is the repository's configs/mini_lvis/atss_focal_R18.py; run_study.py sets the
# schedule, seed and output folder per run through overrides.
from ....configs.mini_lvis.atss_focal_R18 import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)
