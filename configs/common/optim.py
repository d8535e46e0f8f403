# SGD as in the paper: lr 0.02 for 16 images per iteration, momentum 0.9, weight decay 1e-4.
# Unlike detectron2's default (no decay on norm layers), the official EFL code decays every
# parameter, GroupNorm included; weight_decay_norm=None applies the base weight decay to them.
from detectron2.model_zoo import get_config

SGD = get_config("common/optim.py").SGD
SGD.params.weight_decay_norm = None
