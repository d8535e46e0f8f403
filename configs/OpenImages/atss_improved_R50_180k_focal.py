# The improved baseline (Baseline†) on OpenImages Challenge 2019: LVIS/atss_improved_R50_2x_focal.py
# (the same settings and the official ATSS box conventions, its training augmentations) with 500
# classes and OpenImages data. Paper: Table 7 "Baseline†" (43.3 AP).
from ..common.data.openimages import dataloader
from ..LVIS.atss_improved_R50_2x_focal import dataloader as _lvis
from ..LVIS.atss_improved_R50_2x_focal import lr_multiplier, model, optimizer, train

model.num_classes = 500
dataloader.train.mapper.augmentations = _lvis.train.mapper.augmentations
