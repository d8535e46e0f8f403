# The R-101-FPN version of faster_rcnn_R50_2x_bags.py, on LVIS/faster_rcnn_R101_2x.py trained with
# train.output_dir=./output/faster_rcnn_R101_2x. Paper: Table 2 R-101 "BAGS" (27.6 AP).
from .faster_rcnn_R50_2x_bags import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "./output/faster_rcnn_R101_2x/model_final.pth"
