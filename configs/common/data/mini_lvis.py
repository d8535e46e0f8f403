# mini-LVIS (efl_d2.data.mini_lvis): the LVIS v1 data block at a CPU-friendly scale.
from .lvis_v1 import dataloader

dataloader.train.dataset.names = "mini_lvis_v1_train"
dataloader.train.mapper.augmentations[0].short_edge_length = (224, 256, 288)
dataloader.train.mapper.augmentations[0].max_size = 384
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1

dataloader.test.dataset.names = "mini_lvis_v1_val"
dataloader.test.mapper.augmentations[0].short_edge_length = 256
dataloader.test.mapper.augmentations[0].max_size = 384
dataloader.test.num_workers = 1
# a few thousand detections: scoring in this process beats starting worker processes
dataloader.evaluator.num_workers = 0

# The default build of `python -m efl_d2.data.mini_lvis` (its num_categories / num_train_images).
num_classes = 40
num_train_images = 600
# LVIS's t = 0.001 means "a class in fewer than ~100 of the 100k train images is repeated"; the
# same rule in image counts on mini-LVIS's 600 images gives t = 100 / 600.
dataloader.train.repeat_thresh = 100 / num_train_images
