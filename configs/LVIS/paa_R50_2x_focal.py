# PAA R-50-FPN (probabilistic anchor assignment, IoU branch, score voting), focal loss.
# Paper: Table 1 / 6 "PAA" (23.7 AP). ATSS's head and losses; the rest as mmdetection's PAA:
# one anchor of scale 8, IoU >= 0.1 candidates, 9 per level and GT, box coder (10, 10, 5, 5),
# box loss x 1.3, IoU loss x 0.5, test NMS 0.6. No stabilized settings (the paper names only
# RetinaNet and FCOS* as trained with them).
from detectron2.config import LazyCall as L
from detectron2.modeling.matcher import Matcher

from efl_d2.modeling import PAA

from .atss_R50_2x_focal import dataloader, lr_multiplier, model, optimizer, train

model._target_ = PAA
del model.anchor_matcher  # PAA assigns anchors from its own predictions
model.initial_matcher = L(Matcher)(thresholds=[0.1], labels=[0, 1], allow_low_quality_matches=True)
model.topk = 9
model.score_voting = True
model.quality = "iou"
model.box2box_transform.weights = [10.0, 10.0, 5.0, 5.0]
model.box_loss_weight = 1.3
model.quality_loss_weight = 0.5
model.test_nms_thresh = 0.6
