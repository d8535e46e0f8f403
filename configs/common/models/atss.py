# ATSS R-50-FPN (Zhang et al. 2020) with a pluggable classification loss, sigmoid focal loss by
# default. Derived from detectron2's RetinaNet model; only what differs is stated. Dataset-neutral:
# the class count, the classification prior and the per-image test budget come from the dataset
# piece (configs/common/lvis_one_stage.py); the EFL paper's improved head is ./atss_improved.py.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from efl_d2.losses import SigmoidFocalLoss
from efl_d2.modeling import ATSS, ATSSHead, ATSSMatcher

model = get_config("common/models/retinanet.py").model
model._target_ = ATSS
del model.focal_loss_alpha, model.focal_loss_gamma  # cls_loss carries its own parameters

# P6/P7 from the 256-channel P5 (as detectron2's FCOS); official: from the C5 lateral.
model.backbone.top_block.in_feature = "p5"
model.backbone.top_block.in_channels = "${..out_channels}"

model.head._target_ = ATSSHead
model.head.norm = "GN"
model.head.num_anchors = 1

# One square anchor of side 8 strides per location, centres at (i + 0.5) * stride; k = 9.
model.anchor_generator.sizes = [[8 * s] for s in (8, 16, 32, 64, 128)]
model.anchor_generator.aspect_ratios = [1.0]
model.anchor_generator.offset = 0.5
model.anchor_matcher = L(ATSSMatcher)(topk=9)
model.quality = "centerness"

model.cls_loss = L(SigmoidFocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)

# The official EFL code's inference: top-min(6000, #anchors) per level, one NMS at 0.5.
model.test_topk_candidates = 6000
model.test_nms_thresh = 0.5
model.test_topk_per_class = 0  # > 0 for AP-fixed (tools/train_net.py --eval-protocol)
