# What every CPU-sized mini-LVIS config shares: a ResNet-18 FPN trained from scratch (there are no
# pretrained weights offline) and a 300-iteration schedule at 4 images per iteration.
from detectron2.layers import ShapeSpec

from .optim import SGD as optimizer
from .schedule import multistep_with_warmup
from .train import train

train.max_iter = 300
train.checkpointer.period = 100
train.device = "cpu"
optimizer.lr = 0.01  # batch 4
# Written for 300 iterations, but detectron2's LRMultiplier evaluates it at iteration /
# train.max_iter, so any train.max_iter stretches it: warm-up over the first 1/6, 10x decays at
# 2/3 and 0.9 of training.
lr_multiplier = multistep_with_warmup(train.max_iter, [200, 270], warmup_iters=50)


def resnet18_fpn_from_scratch(model, channels=64):
    """Make a detectron2 dense detector's ResNet-50 FPN a ResNet-18 with BatchNorm, all stages
    trained, and a ``channels``-wide FPN and head with towers of 2 convs."""
    bottom_up = model.backbone.bottom_up
    bottom_up.stages.depth = 18
    del bottom_up.stages.stride_in_1x1  # BasicBlock has no such option
    bottom_up.stages.norm = "BN"
    bottom_up.stem.norm = "BN"
    bottom_up.freeze_at = 0
    model.backbone.out_channels = channels
    model.head.input_shape = [ShapeSpec(channels=channels)] * 5
    model.head.conv_dims = [channels, channels]
    return model
