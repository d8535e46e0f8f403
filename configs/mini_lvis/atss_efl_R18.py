# ATSS + EFL on mini-LVIS, CPU-sized: the README demo's detector. Improved-baseline head options
# (IoU branch, anchors {6, 8}, k = 18, stabilized settings) on a ResNet-18 FPN trained from scratch
# (no pretrained weights offline) at ~256 px.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from efl_d2.losses import EqualizedFocalLoss

from ..common.data.mini_lvis import dataloader, num_classes
from ..common.models.atss import model
from ..common.optim import SGD as optimizer
from ..common.schedule import multistep_with_warmup
from ..common.train import train

model.num_classes = num_classes
model.cls_loss = L(EqualizedFocalLoss)(num_classes="${..num_classes}", gamma_b=2.0, scale=8.0)
# ResNet-18 with BatchNorm, all stages trained; 64-channel FPN and towers of 2 convs.
model.backbone.bottom_up.stages.depth = 18
del model.backbone.bottom_up.stages.stride_in_1x1  # BasicBlock has no such option
model.backbone.bottom_up.stages.norm = "BN"
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.freeze_at = 0
model.backbone.out_channels = 64
model.head.input_shape = [ShapeSpec(channels=64)] * 5
model.head.conv_dims = [64, 64]

train.max_iter = 300
train.checkpointer.period = 100
train.device = "cpu"
train.clip_grad = 35.0
optimizer.lr = 0.01  # 4 images per iteration
lr_multiplier = multistep_with_warmup(train.max_iter, [200, 270], warmup_iters=50)
