# PAA (probabilistic anchor assignment, IoU branch, score voting) R-50-FPN: the ATSS model of
# ./atss.py with what PAA changes, as mmdetection's PAA: candidates of IoU >= 0.1, 9 per level and
# GT, box coder (10, 10, 5, 5), box loss x 1.3, IoU loss x 0.5, test NMS 0.6 (one anchor of scale
# 8 per location, as ATSS).
from detectron2.config import LazyCall as L
from detectron2.modeling.matcher import Matcher

from efl_d2.modeling import PAA

from .atss import model

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
