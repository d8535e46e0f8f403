# RetinaNet R-50-FPN on OpenImages Challenge 2019: LVIS/retinanet_R50_2x_focal.py (the same
# settings, 180k iterations with steps at 120k / 160k) with 500 classes and OpenImages data.
# Paper: Table 7 "RetinaNet" (32.1 AP).
from ..common.data.openimages import dataloader
from ..LVIS.retinanet_R50_2x_focal import lr_multiplier, model, optimizer, train

model.num_classes = 500
