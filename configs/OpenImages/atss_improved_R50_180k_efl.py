# EFL on the improved baseline on OpenImages Challenge 2019: LVIS/atss_improved_R50_2x_efl.py
# with 500 classes and OpenImages data, nothing tuned. Paper: Table 7 "EFL" (51.5 AP).
from ..common.data.openimages import dataloader
from ..LVIS.atss_improved_R50_2x_efl import dataloader as _lvis
from ..LVIS.atss_improved_R50_2x_efl import lr_multiplier, model, optimizer, train

model.num_classes = 500
dataloader.train.mapper.augmentations = _lvis.train.mapper.augmentations
