# detectron2's FCOS (focal loss) on mini-LVIS with a small ResNet-18 FPN trained from scratch on
# CPU: the foundation's default detector until ATSS + EFL replace it.
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from ..common.data.mini_lvis import dataloader, num_classes
from ..common.optim import SGD as optimizer
from ..common.schedule import multistep_with_warmup
from ..common.train import train

model = get_config("common/models/fcos.py").model
model.num_classes = num_classes
# ResNet-18 with BatchNorm, all stages trained: there are no pretrained weights offline.
model.backbone.bottom_up.stages.depth = 18
del model.backbone.bottom_up.stages.stride_in_1x1  # BasicBlock has no such option
model.backbone.bottom_up.stages.norm = "BN"
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.freeze_at = 0
model.backbone.out_channels = 64
model.backbone.top_block.in_channels = "${..out_channels}"  # P6 from P5
model.head.input_shape = [ShapeSpec(channels=64)] * 5
model.head.conv_dims = [64, 64]
model.test_score_thresh = 0.05
model.max_detections_per_image = 300

train.max_iter = 300
train.checkpointer.period = 100
train.device = "cpu"
optimizer.lr = 0.01  # batch 4
lr_multiplier = multistep_with_warmup(train.max_iter, [200, 270], warmup_iters=50)
