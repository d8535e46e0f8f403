# BAGS (balanced group softmax, Li et al. 2020) as the second stage of decoupled training: cRT's
# stage (LVIS/faster_rcnn_R50_2x_crt.py: the trained Faster R-CNN, classifier alone retrained,
# 1x with CBS) with the classifier a softmax per group of classes binned by training instances
# ((0, 10), [10, 100), [100, 1000), [1000, inf), each with an "others" logit) plus a
# background / foreground softmax, and 8 "others" RoIs kept per in-group RoI (the authors'
# settings). Paper: Table 2 "BAGS" (26.0 AP).
from detectron2.config import LazyCall as L

from efl_d2.data import category_instance_counts
from efl_d2.losses import BalancedGroupSoftmaxLoss

from .faster_rcnn_R50_2x_crt import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor.cls_loss = L(BalancedGroupSoftmaxLoss)(
    num_classes="${..num_classes}",
    instance_counts=L(category_instance_counts)(name="lvis_v1_train"),
    bin_edges=(10, 100, 1000),
    others_ratio=8.0,
)
