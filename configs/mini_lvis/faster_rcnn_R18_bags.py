# BAGS on mini-LVIS: mini_lvis/faster_rcnn_R18_crt.py's second stage with the balanced group
# softmax classifier (the authors' bins and others ratio).
from detectron2.config import LazyCall as L

from efl_d2.data import category_instance_counts
from efl_d2.losses import BalancedGroupSoftmaxLoss

from .faster_rcnn_R18_crt import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor.cls_loss = L(BalancedGroupSoftmaxLoss)(
    num_classes="${..num_classes}",
    instance_counts=L(category_instance_counts)(name="mini_lvis_v1_train"),
)
