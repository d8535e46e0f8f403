# Study variant "focal" (the paper's Baseline†): ATSS R-18 on mini-LVIS with sigmoid focal loss.
# Everything is the model zoo's mini_lvis/atss_focal_R18.py; run_study.py sets the schedule, seed
# and output folder per run through overrides.
from efl_d2.model_zoo import get_config

_base = get_config("mini_lvis/atss_focal_R18.py")
dataloader, lr_multiplier, model, optimizer, train = (
    _base[k] for k in ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)
