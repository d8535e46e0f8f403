# LVIS v1 detection data (box only), as in the paper: repeat-factor sampling with t = 0.001,
# multi-scale training (short side 640-800, max 1333) with flips, single-scale test 800/1333,
# LVISEvaluator with up to 300 detections per image: Detectron2's, scored by efl_d2.evaluation (the
# same numbers as lvis-api, category shards in 2 processes; `dataloader.evaluator.scorer=detectron2`
# gives Detectron2's own scoring).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader
from omegaconf import OmegaConf

from efl_d2.data import RobustDatasetMapper, build_rfs_train_loader, get_lvis_dataset_dicts
from efl_d2.evaluation import LVISEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_rfs_train_loader)(
    dataset=L(get_lvis_dataset_dicts)(names="lvis_v1_train"),
    mapper=L(RobustDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(640, 672, 704, 736, 768, 800),
                sample_style="choice",
                max_size=1333,
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=False,
    ),
    total_batch_size=16,
    repeat_thresh=0.001,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_lvis_dataset_dicts)(names="lvis_v1_val", filter_empty=False),
    mapper=L(RobustDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(LVISEvaluator)(
    dataset_name="${..test.dataset.names}",
    max_dets_per_image=300,
    num_workers=2,
    protocol="standard",
)
