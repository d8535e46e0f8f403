# detectron2's FCOS (focal loss) on mini-LVIS with a small ResNet-18 FPN trained from scratch on
# CPU: the foundation's default detector until ATSS + EFL replace it.
from detectron2.model_zoo import get_config

from efl_d2.model_zoo import small_resnet_fpn

from ..common.data.mini_lvis import dataloader, num_classes
from ..common.mini_lvis_cpu import lr_multiplier, optimizer, train

model = small_resnet_fpn(get_config("common/models/fcos.py").model, from_scratch=True)
model.num_classes = num_classes
model.test_score_thresh = 0.05
model.max_detections_per_image = 300
