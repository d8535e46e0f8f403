# detectron2's Faster R-CNN R-50-FPN (box only) on LVIS v1, 2x with RFS: the paper's two-stage
# reference. Paper: Table 1 / 2 "Faster R-CNN" (24.1 AP). LVIS test settings as detectron2's
# LVIS configs: score threshold 1e-4, 300 detections per image.
from detectron2.model_zoo import get_config

from ..common.lvis_2x import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up.freeze_at = 2
model.roi_heads.num_classes = 1203
model.roi_heads.mask_in_features = None  # box only
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
model.roi_heads.box_predictor.test_score_thresh = 0.0001
model.roi_heads.box_predictor.test_topk_per_image = 300
