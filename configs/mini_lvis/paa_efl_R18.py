# PAA + EFL on mini-LVIS, CPU-sized (ResNet-18 FPN from scratch, ~256 px, stabilized settings as
# the ATSS demo config), to try PAA's assignment without LVIS.
from detectron2.config import LazyCall as L

from efl_d2.losses import EqualizedFocalLoss
from efl_d2.model_zoo import small_resnet_fpn

from ..common.data.mini_lvis import dataloader, num_classes
from ..common.lvis_one_stage import lvis_one_stage
from ..common.mini_lvis_cpu import lr_multiplier, optimizer, train
from ..common.models.paa import model

model = small_resnet_fpn(lvis_one_stage(model, num_classes), from_scratch=True)
model.cls_loss = L(EqualizedFocalLoss)(num_classes="${..num_classes}", gamma_b=2.0, scale=8.0)
train.clip_grad = 35.0
