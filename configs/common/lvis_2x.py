# Everything the paper's LVIS v1 experiments share, whatever the detector: LVIS v1 data with RFS
# (t = 0.001), SGD lr 0.02 at 16 images per iteration, the 2x schedule (180k iterations, steps at
# 120k / 160k, 1000 warm-up iterations), ImageNet-pretrained backbone.
#
# Schedule: detectron2's LVIS schedule (180k x 16 images, ~28.8 epochs of the 100k train images);
# the official code counts 24 epochs of the RFS-expanded dataset instead, whose length depends
# on the json (see docs/official_efl.md §4).
#
# Backbone weights: detectron2's model-zoo ImageNet R-50 (MSRA/Caffe2 layout, BGR input, std 1),
# downloadable through DetectionCheckpointer as is. The official code starts from torchvision's
# weights; `tools/convert_torchvision_to_d2.py` converts those for `train.init_checkpoint` (then
# also set RGB input, torchvision's pixel mean/std and stride_in_1x1=False).
from .data.lvis_v1 import dataloader
from .optim import SGD as optimizer
from .schedule import lr_multiplier_2x as lr_multiplier
from .train import train

train.max_iter = 180000
train.eval_period = 0  # evaluate the final model, as the paper does
train.checkpointer.period = 10000
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
