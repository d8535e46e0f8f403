# detectron2's FCOS with centre sampling (the paper's FCOS*) and a pluggable classification loss.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from efl_d2.losses import EqualizedFocalLoss
from efl_d2.modeling import PluggableFCOS

model = get_config("common/models/fcos.py").model
model._target_ = PluggableFCOS
model.num_classes = 1203
model.cls_loss = L(EqualizedFocalLoss)(num_classes="${..num_classes}")
# LVIS: AP is computed over up to 300 detections per image, so keep low-score ones.
model.test_score_thresh = 0.0001
model.max_detections_per_image = 300
model.test_topk_per_class = 0  # > 0 for AP-fixed (tools/train_net.py --eval-protocol)
