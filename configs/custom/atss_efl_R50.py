# ATSS + EFL on your own data, the paper's recipe: configs/LVIS/atss_improved_R50_2x_efl.py (the
# improved baseline with EFL s = 8, R-50-FPN from ImageNet weights, 16 images per iteration,
# multi-scale 640-800 training, 800/1333 test, the 2x schedule) with the data of the `custom.*`
# keys. The 2x schedule is 180k iterations (~29 epochs of LVIS's 100k images): scale
# train.max_iter to your data (epochs x images / 16), the lr steps and warm-up follow it.
from ..common.data.custom import custom, custom_data
from ..LVIS.atss_improved_R50_2x_efl import dataloader, lr_multiplier, model, optimizer, train

dataloader = custom_data(dataloader)
model.num_classes = "${custom.num_classes}"
