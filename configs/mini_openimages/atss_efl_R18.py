# ATSS + EFL on mini-OpenImages, CPU-sized: mini_lvis/atss_efl_R18.py's detector and schedule on
# the OpenImages pipeline (hierarchy-expanded labels, group-of boxes, the challenge metric).
from ..common.data.mini_openimages import dataloader, num_classes
from ..mini_lvis.atss_efl_R18 import lr_multiplier, model, optimizer, train

model.num_classes = num_classes
