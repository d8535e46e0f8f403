# Detectron2's Faster R-CNN R-50-FPN (its Mask R-CNN FPN model without the mask branch), with the
# box predictor that takes a pluggable region loss (efl_d2.modeling.PluggableFastRCNNOutputLayers;
# cls_loss=None is Detectron2's softmax cross entropy). Dataset-neutral: see
# configs/common/lvis_two_stage.py.
from detectron2.model_zoo import get_config

from efl_d2.modeling import PluggableFastRCNNOutputLayers

model = get_config("common/models/mask_rcnn_fpn.py").model
model.roi_heads.mask_in_features = None  # box only
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
model.roi_heads.box_predictor._target_ = PluggableFastRCNNOutputLayers
model.roi_heads.box_predictor.cls_loss = None
