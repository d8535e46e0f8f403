# OpenImages Challenge 2019 detection data (box only; efl_d2.data.openimages), as the paper's
# Table 7: the LVIS data block's augmentations and test size, the random sampler (no RFS),
# hierarchy-expanded training labels, the challenge metric with AP1-AP5 (OpenImagesEvaluator).
# The images are a lazy sequence over columnar tables (efl_d2.data.openimages.OpenImagesImages:
# 76 bytes per box, not a dict per box). No aspect-ratio grouping: the release gives no image
# sizes, and reading 1.7M image headers up front would cost more than grouping saves.
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader
from omegaconf import OmegaConf

from efl_d2.data import OpenImagesDatasetMapper, build_rfs_train_loader
from efl_d2.data.openimages import openimages_images
from efl_d2.evaluation.openimages import OpenImagesEvaluator

from .lvis_v1 import dataloader as _lvis

dataloader = OmegaConf.create()
dataloader.train = L(build_rfs_train_loader)(
    dataset=L(openimages_images)(
        names="oid_challenge_2019_train",
        filter_empty=True,
        expand_hierarchy=True,  # the challenge's labels: a box of a class is one of its ancestors
        group_of="box",  # or "ignore": group-of boxes left out of training (iscrowd)
    ),
    mapper=L(OpenImagesDatasetMapper)(
        is_train=True,
        augmentations=_lvis.train.mapper.augmentations,
        image_format="BGR",
        use_instance_mask=False,
    ),
    total_batch_size=16,
    repeat_thresh=None,  # the random sampler
    aspect_ratio_grouping=False,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(openimages_images)(names="oid_challenge_2019_val"),
    mapper=L(OpenImagesDatasetMapper)(
        is_train=False,
        augmentations=_lvis.test.mapper.augmentations,
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)
dataloader.evaluator = L(OpenImagesEvaluator)(dataset_name="${..test.dataset.names}")
