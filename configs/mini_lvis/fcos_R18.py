# detectron2's FCOS (focal loss) on mini-LVIS with a small ResNet-18 FPN trained from scratch on
# CPU: the foundation's default detector until ATSS + EFL replace it.
from detectron2.model_zoo import get_config

from ..common.data.mini_lvis import dataloader, num_classes
from ..common.mini_lvis_cpu import lr_multiplier, optimizer, resnet18_fpn_from_scratch, train

model = resnet18_fpn_from_scratch(get_config("common/models/fcos.py").model)
model.num_classes = num_classes
model.backbone.top_block.in_channels = "${..out_channels}"  # P6 from P5
model.test_score_thresh = 0.05
model.max_detections_per_image = 300
