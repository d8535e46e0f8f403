# mini-OpenImages (efl_d2.data.mini_openimages): the OpenImages data block at mini-LVIS's
# CPU-friendly scale (the same images, sizes and batch).
from .mini_lvis import dataloader as _mini_lvis
from .openimages import dataloader

dataloader.train.dataset.names = "mini_openimages_train"
dataloader.train.mapper.augmentations = _mini_lvis.train.mapper.augmentations
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.dataset.names = "mini_openimages_val"
dataloader.test.mapper.augmentations = _mini_lvis.test.mapper.augmentations
dataloader.test.num_workers = 1

# The default build of `python -m efl_d2.data.mini_openimages` (mini-LVIS's 40 categories as
# leaves, 10 shapes and 2 shape families above them).
num_classes = 52
