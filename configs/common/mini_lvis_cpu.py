# What every CPU-sized mini-LVIS config shares: a 300-iteration schedule at 4 images per iteration.
# Their model is a ResNet-18 FPN trained from scratch (there are no pretrained weights offline):
# efl_d2.model_zoo.small_resnet_fpn(model, from_scratch=True).
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
