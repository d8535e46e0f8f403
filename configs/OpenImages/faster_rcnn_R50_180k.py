# Faster R-CNN R-50-FPN on OpenImages Challenge 2019: LVIS/faster_rcnn_R50_2x.py with 500
# classes and OpenImages data. Paper: Table 7 "Faster R-CNN" (43.1 AP).
from ..common.data.openimages import dataloader
from ..LVIS.faster_rcnn_R50_2x import lr_multiplier, model, optimizer, train

model.roi_heads.num_classes = 500
