# detectron2's RetinaNet with a pluggable classification loss (EFL paper Tables 1 and 6), sigmoid
# focal loss by default. Dataset-neutral (see configs/common/lvis_one_stage.py).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from efl_d2.losses import SigmoidFocalLoss
from efl_d2.modeling import PluggableRetinaNet

model = get_config("common/models/retinanet.py").model
model._target_ = PluggableRetinaNet
model.cls_loss = L(SigmoidFocalLoss)(num_classes="${..num_classes}", gamma=2.0, alpha=0.25)
model.test_topk_per_class = 0  # > 0 for AP-fixed (tools/train_net.py --eval-protocol)
