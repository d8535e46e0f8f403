# Faster R-CNN R-50-FPN + EQLv2 (Tan et al. 2021): C + 1 sigmoid logits, gamma 12, mu 0.8,
# alpha 4 (the authors' constants). Paper: Table 2 "EQLv2" (25.5 AP).
from detectron2.config import LazyCall as L

from efl_d2.losses import EQLv2Loss

from .faster_rcnn_R50_2x import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor.cls_loss = L(EQLv2Loss)(
    num_classes="${..num_classes}", gamma=12.0, mu=0.8, alpha=4.0
)
