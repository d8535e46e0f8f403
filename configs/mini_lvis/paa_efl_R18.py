# PAA + EFL on mini-LVIS, CPU-sized (ResNet-18 FPN from scratch, ~256 px, stabilized settings as
# the ATSS demo config), to try PAA's assignment without LVIS.
from ..common.data.mini_lvis import dataloader, num_classes
from ..common.mini_lvis_cpu import lr_multiplier, optimizer, resnet18_fpn_from_scratch, train
from ..common.models.paa import model

model = resnet18_fpn_from_scratch(model)
model.num_classes = num_classes
train.clip_grad = 35.0
