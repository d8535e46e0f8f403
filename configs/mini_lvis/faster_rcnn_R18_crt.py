# cRT on mini-LVIS: the classifier of mini_lvis/faster_rcnn_R18.py (trained with
# train.output_dir=./output/mini_lvis_faster_rcnn_R18) re-initialised and retrained alone with
# class-balanced sampling for half the first stage's iterations.
from efl_d2.data import build_class_balanced_train_loader

from .faster_rcnn_R18 import dataloader, lr_multiplier, model, optimizer, train

dataloader.train._target_ = build_class_balanced_train_loader
del dataloader.train.repeat_thresh
train.init_checkpoint = "./output/mini_lvis_faster_rcnn_R18/model_final.pth"
train.retrain_only = ["roi_heads.box_predictor.cls_score"]
train.max_iter = 150
