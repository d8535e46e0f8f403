# detectron2's FCOS with centre sampling (the paper's FCOS*) and a pluggable classification loss,
# sigmoid focal loss by default. Dataset-neutral (see configs/common/lvis_one_stage.py).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from efl_d2.losses import SigmoidFocalLoss
from efl_d2.modeling import PluggableFCOS

model = get_config("common/models/fcos.py").model
model._target_ = PluggableFCOS
model.cls_loss = L(SigmoidFocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)
model.test_topk_per_class = 0  # > 0 for AP-fixed (tools/train_net.py --eval-protocol)
