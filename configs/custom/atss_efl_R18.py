# ATSS + EFL on your own data, CPU-sized: configs/mini_lvis/atss_efl_R18.py (the README demo's
# detector, a ResNet-18 FPN from scratch at ~256 px, 800 iterations of 4 images) with the data
# of the `custom.*` keys. Set train.max_iter for your data (the demo's 800 iterations are ~5
# epochs of 600 images).
from ..common.data.custom import custom, custom_data
from ..mini_lvis.atss_efl_R18 import dataloader, lr_multiplier, model, optimizer, train

dataloader = custom_data(dataloader)
model.num_classes = "${custom.num_classes}"
