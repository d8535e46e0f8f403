# Detectron2's Faster R-CNN (softmax cross entropy) on mini-LVIS, CPU-sized: a ResNet-18 FPN
# trained from scratch at ~256 px with a 2 x 256 fc box head; the LVIS protocol's test settings.
# The base of the two-stage methods' CPU variants.
from efl_d2.model_zoo import small_faster_rcnn

from ..common.data.mini_lvis import dataloader, num_classes
from ..common.lvis_two_stage import lvis_two_stage
from ..common.mini_lvis_cpu import lr_multiplier, optimizer, train
from ..common.models.faster_rcnn import model

model = small_faster_rcnn(lvis_two_stage(model, num_classes), from_scratch=True)
