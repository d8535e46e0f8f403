# Study variant "efl" (s = 8, gamma_b = 2): the model zoo's mini_lvis/atss_efl_R18.py unchanged.
# The s sweep reuses this file with the override model.cls_loss.scale=<s>.
from efl_d2.model_zoo import get_config

_base = get_config("mini_lvis/atss_efl_R18.py")
dataloader, lr_multiplier, model, optimizer, train = (
    _base[k] for k in ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)
