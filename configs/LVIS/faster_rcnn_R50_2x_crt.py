# cRT (Kang et al. 2020), the second stage of decoupled training: the box classifier of the
# trained Faster R-CNN R-50 (LVIS/faster_rcnn_R50_2x.py, RFS 2x) re-initialised and retrained
# alone, everything else frozen, for a 1x schedule with class-balanced sampling (CBS).
# Paper: Table 2 "cRT" (24.8 AP).
#
# First stage: train LVIS/faster_rcnn_R50_2x.py with train.output_dir=./output/faster_rcnn_R50_2x
# (this file reads its model_final.pth; or override train.init_checkpoint).
from detectron2.config import LazyCall as L

from efl_d2.data import build_class_balanced_train_loader

from ..common.schedule import lr_multiplier_1x as lr_multiplier
from .faster_rcnn_R50_2x import dataloader, model, optimizer, train

dataloader.train._target_ = build_class_balanced_train_loader
del dataloader.train.repeat_thresh
train.init_checkpoint = "./output/faster_rcnn_R50_2x/model_final.pth"
train.retrain_only = ["roi_heads.box_predictor.cls_score"]
train.max_iter = 90000
