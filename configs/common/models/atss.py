# ATSS + Equalized Focal Loss, the EFL paper's "improved baseline" detector (R-50-FPN, LVIS v1).
# Derived from detectron2's RetinaNet model; only what differs is stated.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from efl_d2.losses import EqualizedFocalLoss
from efl_d2.modeling import ATSS, ATSSHead, ATSSMatcher

model = get_config("common/models/retinanet.py").model
model._target_ = ATSS
del model.focal_loss_alpha, model.focal_loss_gamma  # cls_loss carries its own parameters

# P6/P7 from the 256-channel P5 (as detectron2's FCOS); official: from the C5 lateral.
model.backbone.top_block.in_feature = "p5"
model.backbone.top_block.in_channels = "${..out_channels}"

model.head._target_ = ATSSHead
model.head.norm = "GN"
model.head.prior_prob = 0.001  # with 1203 sigmoid classes; original ATSS uses 0.01
model.head.num_anchors = 2

# "IA": two square anchors per location, sides 6 and 8 strides (scale 6 first, as the official
# weights expect); centres at (i + 0.5) * stride. Original ATSS: sizes [[8 * s] ...], 1 anchor.
model.anchor_generator.sizes = [[6 * s, 8 * s] for s in (8, 16, 32, 64, 128)]
model.anchor_generator.aspect_ratios = [1.0]
model.anchor_generator.offset = 0.5
model.anchor_matcher = L(ATSSMatcher)(topk=18)  # 9 per anchor shape

model.num_classes = 1203
model.cls_loss = L(EqualizedFocalLoss)(
    num_classes="${..num_classes}", gamma_b=2.0, scale=8.0, alpha=0.25
)
model.quality = "iou"  # "IB": IoU branch; "centerness" for original ATSS

# Official inference: no score threshold, top-min(6000, #anchors) per level, one NMS, 300 dets.
model.test_score_thresh = 0.0
model.test_topk_candidates = 6000
model.test_nms_thresh = 0.5
model.max_detections_per_image = 300
model.test_topk_per_class = 0  # > 0 for AP-fixed (tools/train_net.py --eval-protocol)
