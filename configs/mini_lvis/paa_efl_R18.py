# PAA + EFL on mini-LVIS, CPU-sized (ResNet-18 FPN from scratch, ~256 px, stabilized settings as
# the ATSS demo config), to try PAA's assignment without LVIS.
from efl_d2.model_zoo import small_resnet_fpn

from ..common.data.mini_lvis import dataloader, num_classes
from ..common.mini_lvis_cpu import lr_multiplier, optimizer, train
from ..common.models.paa import model

model = small_resnet_fpn(model, from_scratch=True)
model.num_classes = num_classes
train.clip_grad = 35.0
